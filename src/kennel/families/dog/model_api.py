"""``DogModelAPI``: prediction from raw rows for the dog family.

The shared :class:`~kennel.families.base.ModelAPI` already does the work (processor
transform, model, uniform ``prediction`` / ``proba_<class>`` output); :class:`DogModel`
returns (n, K) probabilities even for binary tasks, so nothing needs absorbing here.
"""

from __future__ import annotations

import logging

from kennel.families.base import ModelAPI

logger = logging.getLogger(__name__)


class DogModelAPI(ModelAPI):
    """The base ModelAPI, named for the dog family (a place for dog-specific output shapes)."""


__all__ = ["DogModelAPI"]
