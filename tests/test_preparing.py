"""The training data is prepared (read, checked, split, turned into features) in a thread while
the run imports MLflow and opens the store (issue 25): the same data as prepared inline, its
errors raised in the run, and a run that fails before it needs the data stops the thread and
ends with one line, nothing logged after it."""

from __future__ import annotations

import contextlib
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from kennel import tracking
from kennel.config.loading import load_config
from kennel.errors import DataError
from kennel.families import Trainer, get_family
from kennel.train import pipeline
from kennel.train.data import OVERLAP_SWITCH_INTERVAL, FitAhead, LocalData, train_context
from tests.conftest import run_cli
from tests.synthetic import frame


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real-looking table (ids, nullable integers, gaps, text, dates, numbers as text)."""
    path = tmp_path_factory.mktemp("preparing") / "customers.parquet"
    frame(200_000, seed=3).to_parquet(path)
    return path


@pytest.fixture(scope="module")
def big_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A million rows of it: still being prepared when the store check fails (~1.5 s in)."""
    path = tmp_path_factory.mktemp("preparing-big") / "customers.parquet"
    frame(1_000_000, seed=4).to_parquet(path)
    return path


def local_data(table: Path, *overrides: str) -> LocalData:
    config = load_config(
        "configs/cat.yaml", [f"data.source={table}", "data.target=churned", *overrides]
    ).config
    return LocalData(config)


def test_prepared_in_a_thread_equals_prepared_inline(table: Path) -> None:
    inline, threaded = local_data(table), local_data(table)
    counts = inline.prepare()
    threaded.start_preparing()
    assert threaded.prepare() == counts
    assert threaded.prepare_s is not None and threaded.prepare_s > 0
    assert threaded.processor.digest == inline.processor.digest
    assert threaded.processor.raw_columns == inline.processor.raw_columns
    for name in ("train", "valid", "test"):
        (x_a, y_a), (x_b, y_b) = getattr(inline, name), getattr(threaded, name)
        pd.testing.assert_frame_equal(x_a, x_b)
        np.testing.assert_array_equal(y_a, y_b)
    pd.testing.assert_frame_equal(inline.test_rows(), threaded.test_rows())


def test_an_error_in_the_thread_is_raised_by_prepare(table: Path) -> None:
    data = local_data(table, "data.target=churn")
    data.start_preparing()
    with pytest.raises(DataError, match="churn"):
        data.prepare()


def test_stopping_the_thread_ends_it_after_its_current_step(table: Path) -> None:
    data = local_data(table)
    data.start_preparing()
    data.stop_preparing()  # right away: the table is still being read
    assert data.prepare_s is not None  # the thread has ended
    assert not hasattr(data, "train"), "no features were made after the stop"


def test_an_unreachable_store_ends_the_run_with_one_line(big_table: Path, tmp_path: Path) -> None:
    """The store fails while the thread still prepares the data: exit 2, the error is the
    last line (the thread logs nothing after it), the run's output folder removed."""
    from kennel.serve.server import free_port

    done = run_cli(
        "train",
        "-c",
        "configs/cat.yaml",
        f"training.output_root={tmp_path}",
        f"data.source={big_table}",
        "data.target=churned",
        env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"},
    )
    assert done.returncode == 2, done.stderr
    text = done.stdout + done.stderr
    assert "cannot reach the MLflow tracking store" in done.stderr.strip().splitlines()[-1]
    assert "Logging error" not in text and "Traceback" not in text, text
    assert not list(tmp_path.iterdir())


def test_the_table_read_is_let_go_after_the_split(tmp_path: Path) -> None:
    """Once split, the Parquet table's Arrow memory is freed: what stays are the features and
    the kept rows, NumPy copies for number columns (an empty view of the table used to keep
    all of it alive)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    numbers = frame(200_000, seed=5, extra=8)
    numbers = numbers[["income", "spend", *(f"x{j}" for j in range(8))]].assign(
        target=(numbers["churned"] == "yes").astype("int64")
    )
    path = tmp_path / "numbers.parquet"
    numbers.to_parquet(path)
    read = pq.read_table(path).nbytes
    before = pa.total_allocated_bytes()
    data = LocalData(
        load_config("configs/cat.yaml", [f"data.source={path}", "data.target=target"]).config
    )
    data.start_preparing()
    data.prepare()
    assert pa.total_allocated_bytes() - before < read / 20, (pa.total_allocated_bytes(), read)


# --------------------------------------------------------------------------- built ahead
def test_lightgbm_datasets_built_in_the_thread_train_the_same_model(table: Path) -> None:
    """The cat Trainer bins its Datasets in the data thread (beside MLflow's imports): the
    fit then constructs nothing and the model is the one an inline run trains, to the byte
    (categorical, integer and missing columns included)."""
    import lightgbm as lgb

    overrides = ("model.params.n_estimators=30",)
    family = get_family("cat")
    threaded = local_data(table, *overrides)
    ahead = FitAhead(threaded.config, family)
    threaded.start_preparing(ahead)
    family.Model, family.Trainer  # noqa: B018 - what the run imports before the thread may
    ahead.library_imported()
    threaded.prepare()
    built = threaded.built_ahead()
    assert built is not None and ahead.build_s is not None and ahead.build_s > 0
    model, trainer = built

    constructed: list[bool] = []
    original = lgb.Dataset.construct

    def spy(self: lgb.Dataset) -> lgb.Dataset:
        constructed.append(self._handle is None)
        return original(self)

    lgb.Dataset.construct = spy  # type: ignore[method-assign]
    try:
        threaded.fit(model, trainer)
    finally:
        lgb.Dataset.construct = original  # type: ignore[method-assign]
    assert not any(constructed), "the fit binned a Dataset again"

    inline = local_data(table, *overrides)
    inline.prepare()
    assert inline.built_ahead() is None
    config = inline.config
    fresh = family.Model(config.model.params, inline.processor.spec())
    inline.fit(fresh, family.Trainer(config.model.params, train_context(config)))
    assert model.booster.model_to_string() == fresh.booster.model_to_string()


def test_prepared_datasets_are_used_only_for_the_same_arrays(table: Path) -> None:
    data = local_data(table, "model.params.n_estimators=5")
    data.prepare()
    config, family = data.config, get_family("cat")
    model = family.Model(config.model.params, data.processor.spec())
    trainer = family.Trainer(config.model.params, train_context(config))
    trainer.prepare(model, data.train, data.valid)
    other_train = (data.train[0].copy(), data.train[1])
    assert trainer._take_prepared(other_train, data.valid) is None
    assert trainer._take_prepared(data.train, data.valid) is None, "dropped after one look"


class _PlainTrainer(Trainer):
    """A family's Trainer without :meth:`Trainer.prepare`."""

    def fit(self, model: Any, train: Any, valid: Any) -> Any:
        raise AssertionError("not called")


class _FailingTrainer(_PlainTrainer):
    def prepare(self, model: Any, train: Any, valid: Any) -> None:
        raise RuntimeError("no bins today")


@pytest.mark.parametrize("trainer", [_PlainTrainer, _FailingTrainer])
def test_nothing_is_built_ahead_without_a_prepare_or_when_it_fails(
    table: Path, trainer: type[Trainer]
) -> None:
    """A family without ``prepare`` gets its Model and Trainer built by the fit as before; a
    ``prepare`` that fails leaves the fit to build (and raise) inside the run."""
    data = local_data(table)
    built: list[str] = []

    def model(params: Any, spec: Any) -> Any:
        built.append("model")
        return object()

    ahead = FitAhead(data.config, SimpleNamespace(Model=model, Trainer=trainer))
    data.start_preparing(ahead)
    ahead.library_imported()
    assert data.prepare()["rows"] > 0
    assert data.built_ahead() is None and ahead.build_s is None
    assert built == ([] if trainer is _PlainTrainer else ["model"])


def test_the_thread_waits_for_the_library_and_ends_when_stopped(table: Path) -> None:
    """Until the run has imported the family's library the thread builds nothing; a run that
    fails before that (and stops the thread) is not kept waiting."""
    data = local_data(table)
    ahead = FitAhead(data.config, get_family("cat"))
    data.start_preparing(ahead)
    stopper = threading.Thread(target=data.stop_preparing)
    stopper.start()
    stopper.join(timeout=60)
    assert not stopper.is_alive(), "the thread kept waiting for the library"
    assert data.built_ahead() is None


def test_the_gil_is_handed_over_quickly_only_while_the_imports_overlap_the_data(
    table: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the main thread imports and opens the store, the GIL switch interval is short
    (the data thread's short calls into C would otherwise each wait up to 5 ms for it); the
    interval is the process's own again once the setup is done, and when the setup fails."""
    config = local_data(table, f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}").config
    own = sys.getswitchinterval()
    assert own != OVERLAP_SWITCH_INTERVAL
    seen: list[float] = []
    real_configure = tracking.configure

    def configure(cfg: Any) -> str:
        seen.append(sys.getswitchinterval())
        return real_configure(cfg)

    monkeypatch.setattr(tracking, "configure", configure)
    family = get_family("cat")
    with contextlib.ExitStack() as stack:
        uri, counts = pipeline.set_up(config, family, LocalData(config), pipeline.Clock(), stack)
    assert seen == [OVERLAP_SWITCH_INTERVAL]
    assert sys.getswitchinterval() == own
    assert uri.endswith("mlflow.db") and counts["rows"] == 200_000 - 432  # labeled rows

    def unreachable(cfg: Any) -> str:
        raise RuntimeError("no store")

    monkeypatch.setattr(tracking, "configure", unreachable)
    with pytest.raises(RuntimeError, match="no store"), contextlib.ExitStack() as stack:
        pipeline.set_up(config, family, LocalData(config), pipeline.Clock(), stack)
    assert sys.getswitchinterval() == own
