"""``kennel promote``: move an environment alias to a version through the gate, or back.

Exit codes: 0 the alias moved (or already pointed at the version, or was rolled back),
3 the gate refused the candidate (``registry.EXIT_REFUSED``; also for a dry run that would
be refused), 2 bad input (nothing changed), 1 internal failure (alias restored).
"""

from __future__ import annotations

import argparse
import logging

from kennel.cli.common import emit, prepare
from kennel.errors import UserError

logger = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> int:
    from kennel import registry
    from kennel.tracking import configure, lost_store_guard

    config = prepare(args)
    env = args.env
    registry.check_environment(env, config)
    if not args.rollback and args.version is None:
        raise UserError(
            f"--version is missing; name the version to promote to '{env}' "
            f"(e.g. --version 3), or use --rollback"
        )
    if args.rollback and args.version is not None:
        raise UserError(
            f"--rollback takes no --version (got {args.version}); it returns '{env}' to its "
            f"previous holder"
        )
    if args.rollback and (args.force or args.data):
        raise UserError("--rollback skips the gate; --force and --data do not apply to it")
    uri = configure(config)
    name = args.model_name or registry.default_model_name(config)
    with lost_store_guard(uri):
        registry.check_model(name)
        if args.rollback:
            decision = registry.rollback(
                name, env, config=config, dry_run=args.dry_run, report=True
            )
        else:
            registry.check_version(name, args.version)
            holdout = registry.Holdout.from_config(config, args.data or None)
            decision = registry.promote(
                name,
                args.version,
                env,
                config=config,
                holdout=holdout,
                force=args.force,
                dry_run=args.dry_run,
                report=True,
            )
    emit(decision.to_dict(), args)
    if decision.dry_run:
        logger.info("%s", decision.summary())
    return decision.exit_code
