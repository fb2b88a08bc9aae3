"""``kennel compare``: the runs of the shared store (a cat and a dog training of the same
data) as one table in the terminal, and as rows with ``--output-json``."""

from __future__ import annotations

import json

from tests.conftest import ROOT, TEST_CONFIGS, Store, run_cli

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
    title, head, rule, *lines = result.stdout.splitlines()
    # What both rows share is said once, above the table.
    assert title.startswith("the runs given: data breast_cancer, task binary; 2 run(s)")
    assert head.split()[:2] == ["run", "family"] and "test_roc_auc" in head and "version" in head
    assert set(rule) <= {"-", " "}
    assert all(len(line) <= 120 for line in result.stdout.splitlines())
    cat_line = next(line for line in lines if line.startswith(by_family["cat"]["run_name"]))
    assert f"{by_family['cat']['metrics']['test_roc_auc']:.4f}" in cat_line
    assert f"v{by_family['cat']['version']}" in cat_line
    assert "None" not in result.stdout


def test_compare_with_no_arguments_shows_where_kennel_train_files_runs(
    shared_store, trained, tmp_path
) -> None:
    """No -c, no --experiment: the experiment a default kennel train uses, else the one with
    the latest kennel run (the shared store's runs are in kennel-tests)."""
    result = run_cli("compare", env=shared_store.env)
    assert result.returncode == 0, result.stderr[-3000:]
    title = result.stdout.splitlines()[0]
    assert title.startswith("experiment 'kennel-tests' (training, trial runs)"), title
    names = {shared_store.client().get_run(trained[f]["run_id"]).info.run_name for f in trained}
    assert names <= set(result.stdout.split())


def test_compare_on_a_fresh_store_says_so(tmp_path) -> None:
    store = Store(tmp_path)
    result = run_cli("compare", env=store.env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("no kennel runs in sqlite:///")
    assert "kennel train -c configs/cat.yaml" in result.stdout


def test_compare_the_last_n_and_bad_input(shared_store, trained, tmp_path) -> None:
    out = tmp_path / "last.json"
    result = run_cli(
        "compare", "-c", CAT, "-n", "1", "--output-json", str(out), env=shared_store.env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()  # title, header, rule, the run, maybe a note
    assert len([line for line in lines[3:] if not line.startswith("(")]) == 1
    (row,) = json.loads(out.read_text())["runs"]
    assert row["kind"] in {"training", "trial"}
    result = run_cli("compare", "-c", CAT, "--run-id", "0" * 32, env=shared_store.env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"kennel compare: error: no MLflow run '{'0' * 32}' in the tracking store"
    )
    result = run_cli("compare", "-c", CAT, "--experiment", "kennel-test", env=shared_store.env)
    assert result.returncode == 2
    assert "experiment 'kennel-test' not found" in result.stderr
    assert "did you mean 'kennel-tests'?" in result.stderr


def test_render_fits_120_columns_and_wide_shows_all() -> None:
    from kennel.cli.compare import render

    rows = [
        {
            "run_name": f"cat-trial-{i}",
            "run_id": f"{i:032d}",
            "family": "cat",
            "data": "builtin:breast_cancer",
            "task": "binary",
            "params": {f"model.params.p{k}": f"{0.123456789 * (i + k)}" for k in range(8)},
            "metrics": {
                f"{p}_{m}": 0.7159725093210578
                for m in ("roc_auc", "log_loss", "accuracy")
                for p in ("test", "val")
            },
            "version": None,
            "aliases": [],
        }
        for i in range(3)
    ]
    text = render(rows, "experiment 'x'")
    assert all(len(line) <= 120 for line in text.splitlines()), text
    assert "0.7160" in text and "0.7159725" not in text
    assert text.splitlines()[-1].startswith("(") and "--wide" in text.splitlines()[-1]
    wide = render(rows, "experiment 'x'", wide=True)
    assert "p7" in wide and "--wide" not in wide and "0.1235" in wide
