"""Hyperparameter search: Optuna proposes, every trial is a ``kennel train`` process.

The rooms: :mod:`~kennel.search.space` (the space), :mod:`~kennel.search.study` (Optuna:
objective, storage, sampler, heartbeats), :mod:`~kennel.search.trials` (one trial's request,
threads, stopping), :mod:`~kennel.search.launchers` and :mod:`~kennel.search.trial_server`
(how trials start), :mod:`~kennel.search.start` (checks, then here or on a cluster),
:mod:`~kennel.search.runner` (the loop),
:mod:`~kennel.search.results` (what a search leaves behind).
"""

from kennel.search.results import SearchFailed, SearchOutcome
from kennel.search.runner import Search, search_output_dir
from kennel.search.signals import SearchInterrupted
from kennel.search.space import Space, apply_values, validate_space
from kennel.search.start import run_search
from kennel.search.study import (
    make_sampler,
    open_study,
    resolve_objective,
    storage_secrets,
    storage_url,
)
from kennel.search.trials import available_cores, effective_threads, trial_threads

__all__ = [
    "Search",
    "SearchFailed",
    "SearchInterrupted",
    "SearchOutcome",
    "Space",
    "apply_values",
    "available_cores",
    "effective_threads",
    "make_sampler",
    "open_study",
    "resolve_objective",
    "run_search",
    "search_output_dir",
    "storage_secrets",
    "storage_url",
    "trial_threads",
    "validate_space",
]
