"""The data room: reading sources, deciding column roles, the fitted processor, splits.

``from kennel.data import DataProcessor`` is the entry point; the modules hold
:mod:`~kennel.data.sources` (builtins, CSV/Parquet, fsspec URLs),
:mod:`~kennel.data.columns` (what each column becomes), :mod:`~kennel.data.numbers` (numbers
written as text), :mod:`~kennel.data.labels` (labels typed by hand),
:mod:`~kennel.data.processor` (the fitted, saved preprocessing) and
:mod:`~kennel.data.splits` (random, stratified, time and group splits).
"""

from kennel.data.columns import ColumnRole
from kennel.data.processor import STATE_FILE, DataProcessor
from kennel.data.sources import BUILTINS
from kennel.data.splits import Splits
from kennel.spec import ColumnSpec

__all__ = ["BUILTINS", "STATE_FILE", "ColumnRole", "ColumnSpec", "DataProcessor", "Splits"]
