"""One promotion of a model at a time: a file lock beside a local SQLite store, or a lock
held in the model registry itself for every other store (between machines too)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from kennel.errors import UserError
from kennel.util import first_line

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def promotion_lock(name: str) -> Iterator[None]:
    """One promotion or rollback of model ``name`` at a time, so the holder read under the
    lock is the one the move replaces and the alias history gets every move in the order
    they take effect.

    On a local SQLite store: a file lock beside the database (processes of this machine).
    On any other store (a tracking server, a database): :func:`registry_lock`, a lock held
    in the store itself, so it works between machines too.
    """
    import mlflow

    from kennel.util import sqlite_file, store_lock

    uri = mlflow.get_tracking_uri()
    if sqlite_file(uri) is not None:  # a database file (not :memory:)
        with store_lock(uri, ".promote.lock"):
            yield
        return
    with registry_lock(name):
        yield


LOCK_SUFFIX = ".promotion-lock"
LOCK_HOLDER_TAG = "kennel.lock.holder"
LOCK_EXPIRES_TAG = "kennel.lock.expires"
#: A lock older than this is taken to be left by a dead process (a promotion takes seconds).
LOCK_TTL_S = 600.0
#: How long a promotion waits for another one of the same model to finish.
LOCK_WAIT_S = 600.0


@contextlib.contextmanager
def registry_lock(
    name: str, *, ttl: float = LOCK_TTL_S, wait: float = LOCK_WAIT_S
) -> Iterator[None]:
    """A lock on model ``name`` held in the model registry itself: the registered model
    ``<name>.promotion-lock``, which exists only while a promotion holds it.

    MLflow offers no lock or compare-and-set over HTTP, but creating a registered model is
    atomic and fails when the name exists (a unique key in the store), whatever the store
    and however many servers front it. The lock carries its holder (``host:pid:start``) and
    an expiry: a lock whose holder is a dead process of this machine, or which is past its
    expiry, is deleted and taken over (with a WARNING naming the holder).
    """
    import random
    import time

    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from kennel.tracking.access import guard
    from kennel.tracking.processes import process_alive, process_tag

    client = MlflowClient()
    lock = f"{name}{LOCK_SUFFIX}"
    token = process_tag()
    deadline = time.monotonic() + wait
    waited = False
    while True:
        try:
            with guard(f"create registered model '{lock}' (the promotion lock of '{name}')"):
                client.create_registered_model(
                    lock,
                    tags={LOCK_HOLDER_TAG: token, LOCK_EXPIRES_TAG: f"{time.time() + ttl:.0f}"},
                    description=(
                        f"kennel: held while a promotion of '{name}' runs and deleted after "
                        "it. Safe to delete when no kennel promote of it is running."
                    ),
                )
            break
        except MlflowException as exc:
            # RESOURCE_DOES_NOT_EXIST: the store found the name taken, then failed to read
            # the lock it collided with because its holder released it in between.
            if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                raise
        holder = _lock_holder(client, lock, ttl)
        if holder is None:
            continue  # released between our two calls: try again at once
        owner, expires = holder
        dead = process_alive(owner) is False
        if dead or time.time() > expires:
            logger.warning(
                "taking over the promotion lock of '%s' left by %s (%s)",
                name,
                owner,
                "its process is gone" if dead else "it expired",
            )
            # Delete only the lock just judged stale (another process may have taken it
            # over since; MLflow has no conditional delete, so this narrows the window).
            if _lock_holder(client, lock, ttl) == holder:
                stale = f"delete registered model '{lock}' (a stale promotion lock)"
                with contextlib.suppress(MlflowException), guard(stale, "MANAGE"):
                    client.delete_registered_model(lock)
            continue
        if time.monotonic() > deadline:
            raise UserError(
                f"model '{name}' is being promoted by {owner} and its lock was not released "
                f"within {wait:.0f} s; try again, or delete registered model '{lock}' if no "
                "promotion of it is running"
            )
        if not waited:
            logger.info("waiting for the promotion of '%s' by %s to finish", name, owner)
            waited = True
        time.sleep(0.1 + random.random() * 0.3)
    try:
        yield
    finally:
        try:
            client.delete_registered_model(lock)
        except MlflowException as exc:  # it expires; the next promotion takes it over
            logger.warning("could not release the promotion lock '%s': %s", lock, first_line(exc))


def _lock_holder(client: MlflowClient, lock: str, ttl: float) -> tuple[str, float] | None:
    """(holder, expiry) of an existing lock; ``None`` when it is gone.

    A lock read without its tags (a SQL store reads the model and its tags in two queries,
    so a lock deleted between them comes back bare; or one made by hand) expires ``ttl``
    after its creation: judging it expired at once would delete a live holder's lock.
    """
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(lock)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    tags = model.tags
    try:
        expires = float(tags[LOCK_EXPIRES_TAG])
    except (KeyError, ValueError):
        expires = (model.creation_timestamp or 0) / 1000 + ttl
    return tags.get(LOCK_HOLDER_TAG, "unknown:0:?"), expires
