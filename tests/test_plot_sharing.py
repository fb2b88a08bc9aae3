"""The background plot process shares a run's plots with a forked copy of itself, so that both
cores draw while the run logs and registers its model (issue 25): the same files, byte for byte,
as one process draws; really two processes; the copy's plots drawn by the parent when the copy
fails; one process where fork is not asked for or not Linux."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from kennel.report import plots
from tests.conftest import Store

ROOT = Path(__file__).resolve().parents[1]

#: Run in a fresh interpreter (the plot process is single-threaded; pytest's may not be):
#: argv = folder, fork ("1"/"0"), mode ("plain", "mark": each plot leaves a file naming the
#: process that drew it, "copy-fails": the forked copy raises on its first plot, "no-fork":
#: fork is refused).
DRAW = """
import json, os, sys
from pathlib import Path
from kennel.report import plots

folder, fork, mode = Path(sys.argv[1]), sys.argv[2] == "1", sys.argv[3]
parent = os.getpid()
real_plan = plots._plan

def plan(folder):
    def wrap(plot):
        def draw():
            if mode == "copy-fails" and os.getpid() != parent:
                raise RuntimeError("the copy fails")
            (folder / (plot.path.name + ".pid")).write_text(str(os.getpid()))
            return plot.draw()
        return plots._Plot(plot.cost, plot.path, draw)
    return [wrap(plot) if mode != "plain" else plot for plot in real_plan(folder)]

plots._plan = plan
if mode == "no-fork":
    def refused():
        raise OSError(11, "Resource temporarily unavailable")
    os.fork = refused
made = plots.draw_all(folder, fork=fork)
pids = {p.name[:-4]: int(p.read_text()) for p in folder.glob("*.pid")}
print(json.dumps({"made": [p.name for p in made], "parent": parent, "pids": pids}))
"""


def draw(folder: Path, *, fork: bool, mode: str = "plain") -> dict:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(DRAW), str(folder), "1" if fork else "0", mode],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def inputs(folder: Path, task: str = "binary", curves: bool = True) -> Path:
    """A run's plot inputs: contributions, a numeric and a categorical dependence column."""
    rng = np.random.default_rng(3)
    n, names = 120, [f"column number {i}" for i in range(12)]
    labels = {"binary": ["no", "yes"], "multiclass": ["a", "b", "c"], "regression": []}[task]
    width = max(len(labels), 1)
    history = {"test_score": [(0, 0.5)]}
    if curves:
        history |= {f"{s}_loss": [(i, 1 / (i + 1 + k)) for i in range(80)] for k, s in
                    enumerate(["train", "val"])}  # fmt: skip
    importance = {name: float(rng.random()) for name in names}
    plots.save_inputs(
        folder,
        task=task,
        labels=labels,
        history=history,
        y_test=rng.integers(0, width, n) if labels else rng.normal(size=n),
        test_raw=rng.dirichlet(np.ones(width), n) if labels else rng.normal(size=(n, 1)),
        importance=importance,
        contributions={"mean_abs": importance, "output": "score", "rows": n},
        dependence=[
            {
                "name": names[0],
                "numeric": True,
                "values": rng.normal(size=n),
                "contrib": rng.normal(size=n),
            },
            {
                "name": names[1],
                "numeric": False,
                "values": rng.choice(["x", "y", "z"], n),
                "contrib": rng.normal(size=n),
            },
        ],  # fmt: skip
    )
    return folder


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_two_processes_draw_the_files_one_process_draws(tmp_path: Path, task: str) -> None:
    one = draw(inputs(tmp_path / "one", task), fork=False)
    two = draw(inputs(tmp_path / "two", task), fork=True, mode="mark")
    assert one["made"] == two["made"]
    expected = {"learning_curve.png", "feature_importance.png", "contributions.png",
                "dependence_00.png", "dependence_01.png"}  # fmt: skip
    expected |= {"residuals.png"} if task == "regression" else {"confusion_matrix.png", "roc.png"}
    assert set(one["made"]) == expected
    for name in one["made"]:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    drawers = set(two["pids"].values())
    assert len(drawers) == 2 and two["parent"] in drawers, two["pids"]
    assert set(two["pids"]) == expected


def test_the_copys_plots_are_drawn_here_when_it_fails(tmp_path: Path) -> None:
    out = draw(inputs(tmp_path), fork=True, mode="copy-fails")
    assert set(out["pids"].values()) == {out["parent"]}
    assert len(out["made"]) == 7
    assert all((tmp_path / name).stat().st_size > 0 for name in out["made"])


def test_no_fork_asked_means_one_process(tmp_path: Path) -> None:
    out = draw(inputs(tmp_path), fork=False, mode="mark")
    assert set(out["pids"].values()) == {out["parent"]}


def test_a_run_without_curves_has_no_learning_curve_whoever_draws(tmp_path: Path) -> None:
    out = draw(inputs(tmp_path, curves=False), fork=True)
    assert "learning_curve.png" not in out["made"] and len(out["made"]) == 6
    assert not (tmp_path / "learning_curve.png").exists()
    assert sorted(out["made"]) == sorted(p.name for p in tmp_path.glob("*.png"))


def test_the_shares_cost_about_the_same(tmp_path: Path) -> None:
    plan = plots._plan(inputs(tmp_path))
    mine, theirs = plots._share(plan)
    assert sorted(p.path for p in mine + theirs) == sorted(p.path for p in plan)
    loads = [sum(p.cost for p in share) for share in (mine, theirs)]
    assert abs(loads[0] - loads[1]) <= max(p.cost for p in plan)


def test_a_refused_fork_draws_everything_here(tmp_path: Path) -> None:
    out = draw(inputs(tmp_path), fork=True, mode="no-fork")
    assert set(out["pids"].values()) == {out["parent"]} and len(out["made"]) == 7


#: ForkedPlots in a fresh interpreter: argv = folder, mode ("mark", "copy-fails", "no-fork",
#: "cancel"); prints the files made, this process's pid, who drew what and the log.
FORKED = """
import json, logging, os, sys, io
from pathlib import Path
from kennel.report import plots

folder, mode = Path(sys.argv[1]), sys.argv[2]
parent = os.getpid()
log = io.StringIO()
logging.basicConfig(stream=log, level=logging.INFO)
real_plan = plots._plan

def plan(folder):
    def wrap(plot):
        def draw():
            if mode == "cancel" and os.getpid() != parent:
                import time
                time.sleep(60)
            if mode == "copy-fails" and os.getpid() != parent:
                raise RuntimeError("the copy fails")
            if mode == "share" and os.getpid() != parent:
                import time
                time.sleep(0.3)  # a slow copy: this process, done early, takes the rest
            (folder / (plot.path.name + ".pid")).write_text(str(os.getpid()))
            with open(folder / "draws.log", "a") as log_file:
                log_file.write(plot.path.name + " ")
            return plot.draw()
        return plots._Plot(plot.cost, plot.path, draw)
    return [wrap(plot) for plot in real_plan(folder)]

plots._plan = plan
if mode == "share":
    import matplotlib.pyplot  # as in a warm search trial
if mode == "no-fork":
    def refused():
        raise OSError(11, "Resource temporarily unavailable")
    os.fork = refused
job = plots.ForkedPlots(folder)
job.inputs_saved()
copy = job.pid
if mode == "cancel":
    job.cancel()
    gone = True
    try:
        os.kill(copy, 0)
        gone = False
    except ProcessLookupError:
        pass
    print(json.dumps({"copy": copy, "gone": gone, "pid_left": job.pid}))
    sys.exit(0)
made = job.finish()
pids = {p.name[:-4]: int(p.read_text()) for p in folder.glob("*.pid")}
draws = (folder / "draws.log").read_text().split() if (folder / "draws.log").exists() else []
print(json.dumps({"made": [p.name for p in made], "parent": parent, "copy": copy,
                  "pids": pids, "log": log.getvalue(), "draws": draws,
                  "left": sorted(p.name for p in folder.iterdir() if p.name.startswith(".")),
                  "inputs_left": (folder / plots.INPUTS_FILE).exists()}))
"""


def forked(folder: Path, mode: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FORKED), str(folder), mode],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    out["stderr"] = result.stderr
    return out


@pytest.mark.skipif(not plots.can_fork(), reason="os.fork: Linux only")
def test_a_forked_copy_draws_the_files_this_process_would(tmp_path: Path) -> None:
    """ForkedPlots (search trials, plots_in_background=false): a copy of the process draws
    every plot, byte for byte what the process itself draws, and is reaped."""
    one = draw(inputs(tmp_path / "one"), fork=False)
    out = forked(inputs(tmp_path / "two"), "mark")
    assert out["copy"] and out["copy"] != out["parent"]
    assert set(out["pids"].values()) == {out["copy"]}, out["pids"]
    assert out["made"] == one["made"] and len(out["made"]) == 7
    for name in one["made"]:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    assert not out["inputs_left"] and "drawing here" not in out["log"]


@pytest.mark.skipif(not plots.can_fork(), reason="os.fork: Linux only")
def test_a_process_with_matplotlib_draws_beside_its_copy(tmp_path: Path) -> None:
    """A warm search trial has matplotlib loaded: done with its model, it draws the plots the
    copy has not taken yet, from the other end of the plan. Each plot is drawn once, the
    files are what one process draws, and the marks of who took what are gone."""
    one = draw(inputs(tmp_path / "one"), fork=False)
    out = forked(inputs(tmp_path / "two"), "share")
    assert set(out["pids"].values()) == {out["parent"], out["copy"]}, out["pids"]
    assert sorted(out["draws"]) == sorted(one["made"]), out["draws"]  # once each
    # the copy takes the plan from its front, this process from its end
    assert out["pids"]["learning_curve.png"] == out["copy"]
    assert out["pids"]["dependence_01.png"] == out["parent"]
    assert out["made"] == one["made"] and len(out["made"]) == 7
    for name in one["made"]:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    assert out["left"] == [] and not out["inputs_left"] and "drawing" not in out["log"]


@pytest.mark.skipif(not plots.can_fork(), reason="os.fork: Linux only")
def test_plots_the_copy_failed_are_drawn_here(tmp_path: Path) -> None:
    out = forked(inputs(tmp_path), "copy-fails")
    assert set(out["pids"].values()) == {out["parent"]} and len(out["made"]) == 7
    assert "plot copy failed (exit code 1); drawing here" in out["log"]
    assert "plot copy failed: RuntimeError: the copy fails" in out["stderr"]
    assert all((tmp_path / name).stat().st_size > 0 for name in out["made"])


@pytest.mark.skipif(not plots.can_fork(), reason="os.fork: Linux only")
def test_a_refused_fork_leaves_the_plots_to_this_process(tmp_path: Path) -> None:
    out = forked(inputs(tmp_path), "no-fork")
    assert out["copy"] is None
    assert set(out["pids"].values()) == {out["parent"]} and len(out["made"]) == 7


@pytest.mark.skipif(not plots.can_fork(), reason="os.fork: Linux only")
def test_a_cancelled_run_leaves_no_copy_behind(tmp_path: Path) -> None:
    out = forked(inputs(tmp_path), "cancel")
    assert out["copy"] and out["gone"] and out["pid_left"] is None


def test_the_run_picks_who_draws(tmp_path: Path) -> None:
    """In the background by default; a fork of the run when the family survives one and no
    cluster client runs; else the run itself."""
    from kennel.config import load_config
    from kennel.train.plots import PlotJob

    def kind(fork_safe: bool, *overrides: str) -> str | None:
        config = load_config(None, list(overrides)).config
        job = PlotJob.start(config, tmp_path, fork_safe=fork_safe)
        try:
            return type(job.job).__name__ if job.job is not None else None
        finally:
            job.cancel()

    assert kind(True) == "BackgroundPlots"
    inline = "tracking.plots_in_background=false"
    assert kind(True, inline) == ("ForkedPlots" if plots.can_fork() else "InlinePlots")
    assert kind(False, inline) == "InlinePlots"  # dog: TensorFlow does not survive a fork
    assert kind(True, inline, "resource.cluster=local:1") == "InlinePlots"
    assert kind(True, inline, "tracking.log_plots=false") is None


#: A real cat training with ``tracking.plots_in_background=false`` (what search trials run):
#: each plot leaves a file naming the process that drew it. argv = output folder.
TRAIN = """
import os, sys
from pathlib import Path
from kennel.report import plots

out = Path(sys.argv[1])
marks = out / "marks"
marks.mkdir(parents=True)
(out / "parent").write_text(str(os.getpid()))
real_plan = plots._plan

def plan(folder):
    def wrap(plot):
        def draw():
            (marks / plot.path.name).write_text(str(os.getpid()))
            return plot.draw()
        return plots._Plot(plot.cost, plot.path, draw)
    return [wrap(plot) for plot in real_plan(folder)]

plots._plan = plan
from kennel.cli import start
sys.argv = ["run.py", "train", "-c", "configs/cat.yaml", "--output-dir", str(out / "run"),
            "tracking.plots_in_background=false", "registry.enabled=false",
            "model.params.n_estimators=30"]
start()
"""


@pytest.mark.slow
@pytest.mark.skipif(not plots.can_fork(), reason="os.fork: Linux only")
def test_a_cat_run_drawing_in_process_hands_its_plots_to_a_copy(
    tmp_path: Path, store: Store
) -> None:
    """After LightGBM has fitted (its thread pool alive) and with the store open, the run
    forks a copy that draws every plot; the run logs them all, and nothing failed."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(TRAIN), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, **store.env},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "plot copy failed" not in result.stderr
    parent = int((tmp_path / "parent").read_text())
    drawers = {p.name: int(p.read_text()) for p in (tmp_path / "marks").iterdir()}
    assert len(drawers) == 8 and parent not in drawers.values(), drawers
    assert len(set(drawers.values())) == 1  # one copy drew them all
    run = json.loads((tmp_path / "run" / "result.json").read_text())
    logged = {Path(f.path).name for f in store.client().list_artifacts(run["run_id"], "plots")}
    assert logged == set(drawers), logged
    assert not (tmp_path / "run" / "plots" / plots.INPUTS_FILE).exists()
