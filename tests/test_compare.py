"""``kennel compare``: the runs of the shared store (a cat and a dog training of the same
data) as one table in the terminal, and as rows with ``--output-json``."""

from __future__ import annotations

import json

from tests.conftest import TEST_CONFIGS, run_cli

CAT = str(TEST_CONFIGS / "tiny_cat.yaml")


def test_compare_the_latest_runs(shared_store, trained, tmp_path) -> None:
    out = tmp_path / "compare.json"
    ids = [arg for f in ("cat", "dog") for arg in ("--run-id", trained[f]["run_id"])]
    result = run_cli("compare", "-c", CAT, *ids, "--output-json", str(out), env=shared_store.env)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())["runs"]
    by_family = {row["family"]: row for row in rows}
    assert set(by_family) == {"cat", "dog"}
    for family, row in by_family.items():
        assert row["run_id"] == trained[family]["run_id"]
        assert row["run_name"].startswith(f"{family}-breast_cancer-")
        assert row["data"] == "builtin:breast_cancer" and row["task"] == "binary"
        assert row["metrics"]["test_roc_auc"] == trained[family]["metrics"]["test_roc_auc"]
        assert row["version"] == trained[family]["registered_version"]
    # Only params both runs have and disagree on: learning_rate, not cat's num_leaves next
    # to dog's hidden_units.
    assert set(by_family["cat"]["params"]) == set(by_family["dog"]["params"])
    assert "model.params.learning_rate" in by_family["cat"]["params"]
    assert "model.params.num_leaves" not in by_family["cat"]["params"]
    dev = shared_store.client().get_registered_model("breast-cancer").aliases.get("dev")
    holder = next(f for f in by_family if by_family[f]["version"] == int(dev))
    assert by_family[holder]["aliases"] == ["dev"]
    table = result.stdout.splitlines()
    assert table[0].split()[:3] == ["run", "family", "data"]
    assert "test_roc_auc" in table[0] and "version" in table[0]
    assert any(line.startswith(by_family["cat"]["run_name"]) for line in table[2:])
    assert any("breast_cancer" in line and "v" in line for line in table[2:])


def test_compare_the_last_n_and_bad_input(shared_store, trained, tmp_path) -> None:
    out = tmp_path / "last.json"
    result = run_cli(
        "compare", "-c", CAT, "-n", "1", "--output-json", str(out), env=shared_store.env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(result.stdout.strip().splitlines()) == 3  # header, rule, one run
    (row,) = json.loads(out.read_text())["runs"]
    assert row["kind"] in {"training", "trial"}
    result = run_cli("compare", "-c", CAT, "--run-id", "0" * 32, env=shared_store.env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"kennel compare: error: no MLflow run '{'0' * 32}' in the tracking store"
    )
    result = run_cli("compare", "-c", CAT, "--experiment", "nope", env=shared_store.env)
    assert result.returncode == 2
    assert "experiment 'nope' not found" in result.stderr
