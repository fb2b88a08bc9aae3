"""``cat``: LightGBM gradient-boosted trees. Importing this package imports no ML library."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kennel.families.base import FamilySpec, Params


class CatParams(Params):
    """LightGBM hyperparameters (see LightGBM's parameter docs for each)."""

    num_leaves: int = Field(31, ge=2, le=131072)
    max_depth: int = Field(-1, ge=-1)
    learning_rate: float = Field(0.05, gt=0, le=1)
    n_estimators: int = Field(500, ge=1)
    min_child_samples: int = Field(20, ge=1)
    feature_fraction: float = Field(1.0, gt=0, le=1)
    bagging_fraction: float = Field(1.0, gt=0, le=1)
    bagging_freq: int = Field(0, ge=0)
    lambda_l1: float = Field(0.0, ge=0)
    lambda_l2: float = Field(0.0, ge=0)
    class_weight: Literal["none", "balanced"] = "none"
    early_stopping_rounds: int = Field(50, ge=0)
    """Stop when the validation metric has not improved for this many rounds; 0 disables."""


FAMILY = FamilySpec(
    name="cat",
    params=CatParams,
    model="kennel.families.cat.model:CatModel",
    trainer="kennel.families.cat.trainer:CatTrainer",
    model_api="kennel.families.cat.model_api:CatModelAPI",
    cluster_trainer="kennel.families.cat.dask_trainer:DaskCatTrainer",
    requirements=("lightgbm",),
    description="LightGBM gradient-boosted trees",
)
