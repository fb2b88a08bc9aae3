"""Starting a search: the space and settings checked, then this worker's trials, here or on
a Dask cluster (``resource.cluster``: one trial after another, each on the whole cluster)."""

from __future__ import annotations

import logging
from pathlib import Path

from kennel.config import Config, ConfigError
from kennel.search.results import SearchOutcome
from kennel.search.runner import Search, quiet_optuna
from kennel.search.space import validate_space

logger = logging.getLogger(__name__)


def run_search(
    config: Config,
    output_dir: Path,
    overrides: list[str] | None = None,
    *,
    config_file: str | None = None,
) -> SearchOutcome:
    """Validate the space, then run this worker's trials; see :mod:`kennel.search.runner`.

    ``overrides`` are the user's CLI overrides, repeated on every trial's command line so
    they keep their precedence over the environment overlay there too; ``config_file``:
    the user's ``-c`` (for the command that trains the best trial).
    """
    validate_space(config)
    if config.search.register_best and not config.tracking.log_model:
        raise ConfigError("search.register_best needs tracking.log_model=true")
    if config.search.register_best and config.search.log_models == "none":
        raise ConfigError(
            "search.register_best needs a model from the best trial; set search.log_models "
            "to improving (the default) or all"
        )
    from kennel.cluster import is_distributed

    if is_distributed(config.resource.cluster):
        return run_search_on_cluster(config, output_dir, overrides or [], config_file)
    search = Search(config, output_dir, overrides or [], begin=True, config_file=config_file)
    quiet_optuna()
    return search.run()


def run_search_on_cluster(
    config: Config, output_dir: Path, overrides: list[str], config_file: str | None = None
) -> SearchOutcome:
    """A search whose trials train on a Dask cluster: one after another, each using the
    whole cluster (LightGBM's data-parallel training already keeps every worker busy; two
    trials at once would halve each one's workers and double the network set-ups). For
    ``local:N`` the search starts one LocalCluster and every trial connects to it."""
    from kennel import cluster
    from kennel.data.sources import Source
    from kennel.families import cluster_trainer, get_family

    cluster_trainer(get_family(config.model.family), config.resource.cluster)  # fails early
    if config.search.n_jobs > 1:
        logger.info(
            "resource.cluster=%s: each trial trains on the whole cluster, so trials run one "
            "after another (search.n_jobs %d -> 1)",
            config.resource.cluster,
            config.search.n_jobs,
        )
        config = config.model_copy(
            update={"search": config.search.model_copy(update={"n_jobs": 1})}
        )
    if "data.source" not in config.search.space:  # else each trial checks its own
        Source(config.data).check_for_cluster()  # a wrong or missing data set: before it starts
    quiet_optuna()
    if not config.resource.cluster.startswith("local"):
        return Search(config, output_dir, overrides, begin=True, config_file=config_file).run()
    with cluster.connect(config.resource.cluster, num_threads=config.resource.num_threads) as (
        _,
        info,
    ):
        trials_overrides = [*overrides, f"resource.cluster={info.address}"]
        return Search(
            config, output_dir, trials_overrides, begin=True, config_file=config_file,
            user_overrides=overrides,
        ).run()  # fmt: skip
