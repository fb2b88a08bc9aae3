"""A model logged by kennel 0.1.0, before the package was split into rooms, still loads,
predicts and serves with today's kennel (``tests/data/legacy/README.md`` says how it was made).

Its ``pyfunc_model.py`` imports ``kennel.packaging.KennelPyfunc``: in a process that has
already imported today's kennel (``kennel serve``, ``kennel predict``) that name must still
resolve.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import PYTHON, ROOT, Store, cli_env, invoke_server, run_cli

LEGACY = ROOT / "tests" / "data" / "legacy"
ROWS = ROOT / "tests" / "data" / "real" / "titanic.csv"


@pytest.fixture
def legacy_model(tmp_path: Path) -> Path:
    with tarfile.open(LEGACY / "cat-titanic-kennel-0.1.0.tar.gz") as archive:
        archive.extractall(tmp_path, filter="data")
    return tmp_path / "model"


def _rows() -> pd.DataFrame:
    return pd.read_csv(ROWS).head(40).drop(columns=["survived"])


def _expected() -> pd.DataFrame:
    return pd.read_csv(LEGACY / "cat-titanic-expected.csv")


def test_legacy_model_loads_in_a_process_that_imported_kennel(legacy_model: Path) -> None:
    import mlflow.pyfunc

    import kennel.serve.pyfunc  # noqa: F401 - today's kennel first, as in kennel serve

    model = mlflow.pyfunc.load_model(str(legacy_model))
    got = model.predict(_rows().drop(columns=["rownames"]))
    assert "kennel.packaging" in sys.modules
    assert sys.modules["kennel.packaging"].__file__.startswith(str(ROOT / "src"))
    pd.testing.assert_frame_equal(got.reset_index(drop=True), _expected(), atol=1e-9)


def test_legacy_model_scores_with_kennel_predict(legacy_model: Path, tmp_path: Path) -> None:
    rows = tmp_path / "rows.csv"
    _rows().to_csv(rows, index=False)
    out = tmp_path / "scored.csv"
    result = run_cli(
        "predict", "--model-uri", str(legacy_model), "--input", str(rows), "--output", str(out)
    )
    assert result.returncode == 0, result.stderr[-2000:]
    scored = pd.read_csv(out)
    expected = _expected()
    assert list(scored["prediction"]) == list(expected["prediction"])
    assert (scored["proba_yes"] - expected["proba_yes"]).abs().max() < 1e-9


@pytest.mark.slow
def test_legacy_model_serves_with_kennel_serve(legacy_model: Path, tmp_path: Path) -> None:
    from kennel.serve.server import free_port, wait_for_ping

    store = Store(tmp_path)
    client = store.client()
    client.create_registered_model("legacy-titanic")
    version = client.create_model_version("legacy-titanic", source=str(legacy_model))
    client.set_registered_model_alias("legacy-titanic", "dev", version.version)
    port = free_port()
    command = [PYTHON, str(ROOT / "run.py"), "serve", "--env", "dev"]
    command += ["--model-name", "legacy-titanic", "--port", str(port)]
    server = subprocess.Popen(
        command,
        env=cli_env(store.env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for_ping(f"http://127.0.0.1:{port}", timeout=120, process=server)
        got = invoke_server(f"http://127.0.0.1:{port}", _rows())
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
    expected = _expected()
    assert list(got["prediction"]) == list(expected["prediction"]), err[-2000:]
    assert (got["proba_yes"] - expected["proba_yes"]).abs().max() < 1e-9
