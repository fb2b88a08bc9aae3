"""``CatModelAPI``: the shared prediction path; LightGBM's output needs no special handling."""

from __future__ import annotations

from kennel.families.base import ModelAPI


class CatModelAPI(ModelAPI):
    """Raw rows -> DataProcessor.transform -> CatModel.predict_raw -> uniform columns."""
