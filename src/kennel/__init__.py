"""kennel: MLflow-tracked machine learning for tabular data with swappable model families.

Importing ``kennel`` is cheap: names are resolved on first use, and nothing here loads
pydantic, MLflow, LightGBM or TensorFlow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = [
    "Config",
    "ConfigError",
    "DataError",
    "DataProcessor",
    "UserError",
    "__version__",
    "load_config",
]

_LAZY = {
    "Config": "kennel.config",
    "load_config": "kennel.config",
    "ConfigError": "kennel.errors",
    "DataError": "kennel.errors",
    "UserError": "kennel.errors",
    "DataProcessor": "kennel.data",
}

if TYPE_CHECKING:
    from kennel.config import Config, load_config
    from kennel.data import DataProcessor
    from kennel.errors import ConfigError, DataError, UserError


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kennel' has no attribute {name!r}")
