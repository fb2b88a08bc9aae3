"""``dog``: a TensorFlow/Keras neural network. Importing this package imports no TensorFlow."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kennel.families.base import FamilySpec, Params


class DogParams(Params):
    """Keras MLP hyperparameters."""

    hidden_units: list[int] = Field(default_factory=lambda: [64, 32], min_length=1)
    activation: Literal["relu", "gelu", "elu", "selu", "tanh", "swish"] = "relu"
    dropout: float = Field(0.1, ge=0, lt=1)
    learning_rate: float = Field(1e-3, gt=0, le=1)
    batch_size: int = Field(64, ge=1)
    epochs: int = Field(100, ge=1)
    early_stopping_patience: int = Field(10, ge=0)
    """Epochs without validation improvement before stopping (best weights restored); 0
    disables early stopping."""
    categorical_encoding: Literal["embedding", "onehot"] = "embedding"
    embedding_dim: int = Field(4, ge=1)
    l2: float = Field(0.0, ge=0)
    explain_permutations: int = Field(8, ge=2, le=256)
    """Permutations averaged per explanation (Shapley sampling): more is steadier and slower;
    the contributions add up to the output for any number."""


FAMILY = FamilySpec(
    name="dog",
    params=DogParams,
    model="kennel.families.dog.model:DogModel",
    trainer="kennel.families.dog.trainer:DogTrainer",
    model_api="kennel.families.dog.model_api:DogModelAPI",
    requirements=("tensorflow",),
    description="TensorFlow/Keras neural network",
    fork_safe=False,  # TensorFlow's runtime does not survive a fork: trials import it
)
