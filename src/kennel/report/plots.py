"""A training run's plots: which figures (:mod:`kennel.report.figures`) it draws from the
inputs the run hands over (:func:`save_inputs`), and the process that draws them: in the
background (:class:`BackgroundPlots`), in a fork (:class:`ForkedPlots`) or here
(:class:`InlinePlots`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from kennel.report.figures import (
    confusion_matrix,
    contribution_bars,
    dependence_plot,
    feature_importance,
    learning_curve,
    pyplot,
    residuals,
    roc,
)

# --------------------------------------------------------------------------- a run's plots
INPUTS_FILE = "plot_inputs.npz"


def save_inputs(
    folder: Path,
    *,
    task: str,
    labels: Sequence[str],
    history: Mapping[str, Sequence[tuple[int, float]]],
    y_test: np.ndarray,
    test_raw: np.ndarray,
    importance: Mapping[str, float] | None,
    contributions: Mapping[str, Any] | None = None,
    dependence: Sequence[Mapping[str, Any]] = (),
) -> Path:
    """Everything :func:`draw_all` needs, in one ``.npz`` (plain arrays, no pickle):
    ``contributions`` is the run's ``contributions.json``, ``dependence`` the points of its
    top columns (name, numeric, values, contrib)."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    meta = {
        "task": task,
        "labels": [str(label) for label in labels],
        "history": {k: [[int(s), float(v)] for s, v in points] for k, points in history.items()},
        "importance": dict(importance or {}),
        "contributions": dict(contributions or {}),
        "dependence": [{"name": d["name"], "numeric": bool(d["numeric"])} for d in dependence],
    }
    arrays = {}
    for i, points in enumerate(dependence):
        arrays[f"dependence_values_{i}"] = np.asarray(points["values"])
        arrays[f"dependence_contrib_{i}"] = np.asarray(points["contrib"], dtype="float64")
    path = folder / INPUTS_FILE
    partial = folder / f".{INPUTS_FILE}.partial.npz"
    np.savez(
        partial,
        meta=np.array(json.dumps(meta)),
        y_test=np.asarray(y_test),
        test_raw=np.asarray(test_raw, dtype="float64"),
        **arrays,
    )
    partial.replace(path)  # atomic: the waiting plot process never reads half a file
    return path


class _Plot(NamedTuple):
    cost: float  # rough seconds to draw (measured on the 2-core reference machine)
    path: Path
    draw: Callable[[], Path | None]


def _plan(folder: Path) -> list[_Plot]:
    """The run's plots, from :func:`save_inputs`' file, each with its drawing call."""
    import json
    from functools import partial

    with np.load(folder / INPUTS_FILE, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        y_test, test_raw = data["y_test"], data["test_raw"]
        dependence = [
            {
                **d,
                "values": data[f"dependence_values_{i}"],
                "contrib": data[f"dependence_contrib_{i}"],
            }
            for i, d in enumerate(meta.get("dependence", []))
        ]
    plan: list[_Plot] = []

    def add(cost: float, name: str, draw: Callable[..., Path | None], *args: Any) -> None:
        plan.append(_Plot(cost, folder / name, partial(draw, *args, folder / name)))

    curves = sum(len({s for s, _ in v}) > 1 for v in meta["history"].values())
    add(0.05 + 0.06 * curves, "learning_curve.png", learning_curve, meta["history"])
    if meta["task"] == "regression":
        add(0.15, "residuals.png", residuals, y_test, test_raw.reshape(-1))
    else:
        labels, picked = meta["labels"], test_raw.argmax(axis=1)
        cells = 0.04 + 0.002 * len(labels) ** 2
        add(cells, "confusion_matrix.png", confusion_matrix, y_test, picked, labels)
        add(0.05 + 0.02 * len(labels), "roc.png", roc, y_test, test_raw, labels)
    if meta["importance"]:
        bars = min(len(meta["importance"]), 25)
        add(0.06 + 0.005 * bars, "feature_importance.png", feature_importance, meta["importance"])
    if meta.get("contributions"):
        bars = min(len(meta["contributions"].get("mean_abs", {})), 20)
        add(0.06 + 0.005 * bars, "contributions.png", contribution_bars, meta["contributions"])
    for i, points in enumerate(dependence):
        add(0.07, f"dependence_{i:02d}.png", dependence_plot, points)
    return plan


def _share(plan: Sequence[_Plot]) -> tuple[list[_Plot], list[_Plot]]:
    """The plan in two shares of about equal cost (the costliest first, to the lighter)."""
    shares: tuple[list[_Plot], list[_Plot]] = ([], [])
    loads = [0.0, 0.0]
    for plot in sorted(plan, key=lambda plot: -plot.cost):
        lighter = 0 if loads[0] <= loads[1] else 1
        shares[lighter].append(plot)
        loads[lighter] += plot.cost
    return shares


def draw_all(folder: Path, *, fork: bool = False) -> list[Path]:
    """Draw a training run's plots from :func:`save_inputs`' file into ``folder``.

    ``fork``: a forked copy of this process draws about half of them (Linux), so that both
    cores draw. The background plot process asks for it: it holds no thread pool a fork
    could break, only matplotlib, scikit-learn's metrics and NumPy. If the copy fails, its
    plots are drawn here."""
    import os

    plan = _plan(folder)
    if not (fork and can_fork() and len(plan) > 1):
        return sorted(path for plot in plan if (path := plot.draw()) is not None)
    mine, theirs = _share(plan)
    try:
        child = os.fork()
    except OSError:  # no process to spare (a limit on processes or memory): all here
        return sorted(path for plot in plan if (path := plot.draw()) is not None)
    if child == 0:  # the copy: its share, then out without the parent's exit hooks
        code = 1
        try:
            for plot in theirs:
                plot.draw()
            code = 0
        finally:
            os._exit(code)
    try:
        made = [plot.draw() for plot in mine]
    finally:
        _, status = os.waitpid(child, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        made += [plot.draw() for plot in theirs]
    else:  # a learning curve with nothing to draw leaves no file
        made += [plot.path for plot in theirs if plot.path.exists()]
    return sorted(path for path in made if path is not None)


#: Left beside a plot by the process that took it (:func:`draw_untaken`); never logged.
TAKEN_SUFFIX = ".taken"


def _take(plot: _Plot) -> bool:
    """Claim ``plot`` for this process: True once, for the first process that asks."""
    import os

    mark = plot.path.with_name(f".{plot.path.name}{TAKEN_SUFFIX}")
    try:
        os.close(os.open(mark, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def draw_untaken(plan: Sequence[_Plot], *, from_end: bool = False) -> None:
    """Draw each plot of ``plan`` no other process has taken, in order (``from_end``: last
    first). Two processes walking the plan from opposite ends draw each plot once and meet
    where their shares are about equal, whatever each had to do before."""
    for plot in reversed(plan) if from_end else plan:
        if _take(plot):
            plot.draw()


def _drawn(folder: Path) -> list[Path]:
    """Once the plots are drawn: the inputs file and the marks of who took which go, the PNG
    files are what is left."""
    (folder / INPUTS_FILE).unlink(missing_ok=True)
    for mark in folder.glob(f".*{TAKEN_SUFFIX}"):
        mark.unlink(missing_ok=True)
    return sorted(folder.glob("*.png"))


class InlinePlots:
    """Draws a run's plots in this process once their inputs are saved."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def cancel(self) -> None:
        """Nothing runs yet: nothing to stop."""

    def distributions_file(self) -> None:
        """No second process builds MLflow's distribution map: the run's MLflow does."""
        return None

    def inputs_saved(self) -> None:
        """Nothing to start: :meth:`finish` draws."""

    def finish(self) -> list[Path]:
        draw_all(self.folder)
        return _drawn(self.folder)


class ForkedPlots(InlinePlots):
    """Draws a run's plots in a forked copy of this process as soon as their inputs are saved
    (Linux; asked for only where the family's library lets its process fork after a fit,
    :attr:`~kennel.families.FamilySpec.fork_safe`), while this process logs the model. No
    second interpreter starts: the copy has every library this process loaded (a warm
    search trial has matplotlib and its fonts). The copy runs only the plotting code, never
    the model's library or its thread pool (LightGBM's OpenMP workers are not in the copy).
    One copy, not two: where no core is spare (parallel trials), more processes only cost
    forks; where one is, this process joins the copy once its own work is done
    (:meth:`finish`). If the fork is refused or the copy fails, :meth:`finish` draws here."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.pid: int | None = None

    def inputs_saved(self) -> None:
        import os
        import sys

        sys.stdout.flush()  # else the copy may write this process's buffered lines again
        sys.stderr.flush()
        parent = os.getpid()
        try:
            pid = os.fork()
        except OSError:  # no process to spare: finish draws here
            return
        if pid == 0:  # the copy: draw, then out without this process's exit hooks
            code = 1
            try:
                from kennel.util import die_with_parent

                die_with_parent()  # the run killed alone (not with its group): so is the copy
                if os.getppid() == parent:
                    draw_untaken(_plan(self.folder))
                    code = 0
            except KeyboardInterrupt:  # Ctrl-C reaches the whole group: the run says it
                pass
            except BaseException as exc:  # said on stderr; the run draws instead
                with contextlib.suppress(Exception):
                    sys.stderr.write(f"plot copy failed: {type(exc).__name__}: {exc}\n")
                    sys.stderr.flush()
            finally:
                os._exit(code)
        self.pid = pid

    def _reap(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds for the copy (then kill it); its exit code (None:
        there was no copy, or its status was lost). Interrupted (Ctrl-C), it kills and
        collects the copy before the interruption goes on."""
        import os
        import signal
        import time

        if self.pid is None:
            return None
        deadline = time.monotonic() + timeout
        try:
            while True:
                done, status = os.waitpid(self.pid, os.WNOHANG)
                if done:
                    self.pid = None
                    return os.waitstatus_to_exitcode(status)
                if time.monotonic() > deadline:
                    self.cancel()
                    return -signal.SIGKILL
                time.sleep(0.005)
        except ChildProcessError:  # collected elsewhere (SIGCHLD ignored?)
            import logging

            logging.getLogger(__name__).warning(
                "plot copy (pid %s): exit status lost; drawing here", self.pid
            )
            self.pid = None
            return None
        except BaseException:
            self.cancel()
            raise

    def cancel(self) -> None:
        """The run failed before its plots were logged (or the copy ran too long): kill
        the copy and collect it."""
        import os
        import signal

        pid, self.pid = self.pid, None
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)

    def finish(self, timeout: float = 300) -> list[Path]:
        """Wait for the copy; the PNG files. A process that has matplotlib loaded (a warm
        search trial) draws what the copy has not started yet instead of waiting idle: the
        two take plots from opposite ends of the plan, so the last plots are drawn on both
        cores. Without matplotlib here, importing it would cost more than it saves."""
        import logging
        import sys

        shared = True
        if self.pid is not None and "matplotlib.pyplot" in sys.modules:
            try:
                draw_untaken(_plan(self.folder), from_end=True)
            except Exception as exc:  # all drawn here below, as without a copy
                logging.getLogger(__name__).info("drawing beside the plot copy: %s", exc)
                shared = False
        code = self._reap(timeout)
        if code == 0 and shared:
            return _drawn(self.folder)
        if code not in (0, None):
            logging.getLogger(__name__).warning(
                "plot copy failed (exit code %s); drawing here", code
            )
        return super().finish()


def can_fork() -> bool:
    """Whether :class:`ForkedPlots` can draw here (``os.fork`` on Linux)."""
    import sys

    return sys.platform == "linux"


class BackgroundPlots:
    """Draws a run's plots in a second interpreter, so the second core does it.

    Started when the run starts: the child imports matplotlib and scikit-learn while the
    parent loads data and trains, then waits for :func:`save_inputs`' file and draws while
    the parent logs and registers the model. A fresh interpreter rather than a fork: started
    before the fit, it imports what the run has not loaded yet, on the spare core (a search
    trial, which has them loaded, uses :class:`ForkedPlots`). If the child fails,
    :meth:`finish` draws the plots in the parent instead.
    """

    def __init__(self, folder: Path) -> None:
        import os
        import subprocess
        import sys

        import kennel

        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        src = str(Path(kennel.__file__).resolve().parents[1])
        # Out with os._exit once drawn: the run waits for this exit, and tearing down an
        # interpreter holding matplotlib and scikit-learn takes ~0.4 s (exit hooks still run).
        code = (
            f"import sys; sys.path.insert(0, {src!r}); from kennel import collector; "
            "collector.own_process(); from kennel.report.plots import main; main(); "
            "import atexit, logging, os; atexit._run_exitfuncs(); logging.shutdown(); "
            "sys.stderr.flush(); os._exit(0)"
        )
        env = {**os.environ, "MPLBACKEND": "Agg"}
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, str(folder), str(os.getpid())],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def cancel(self) -> None:
        """The run failed before its plots: stop the child."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()
        self._drop_distributions()

    def inputs_saved(self) -> None:
        """Nothing to do: the child waits for the inputs file and draws."""

    def distributions_file(self) -> Path:
        """Where the child writes MLflow's distribution map (:mod:`kennel.serve.distributions`)."""
        from kennel.serve.distributions import FILE_NAME

        return self.folder / FILE_NAME

    def _drop_distributions(self) -> None:
        # Not a plot: never logged with them, whether the run used it or not.
        self.distributions_file().unlink(missing_ok=True)

    def finish(self, timeout: float = 300) -> list[Path]:
        """Wait for the drawing (after :func:`save_inputs`); returns the PNG files."""
        import logging
        import subprocess

        logger = logging.getLogger(__name__)
        try:
            _, err = self.process.communicate(timeout=timeout)
            failed = self.process.returncode != 0
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            failed, err = True, "timed out"
        self._drop_distributions()
        if failed:
            detail = (err or "").strip()[-300:] or "no output"
            logger.warning("plot process failed (%s); drawing here", detail)
            return InlinePlots(self.folder).finish()
        return _drawn(self.folder)


def main(argv: Sequence[str] | None = None) -> None:
    """The plot process: ``main([FOLDER, PARENT_PID])``. Imports the plotting libraries,
    waits for the inputs file (giving up if the parent is gone), draws."""
    import os
    import sys
    import time

    from kennel import collector

    args = list(sys.argv[1:] if argv is None else argv)
    folder, parent = Path(args[0]), int(args[1]) if len(args) > 1 else None
    with collector.paused():
        pyplot()
        import sklearn.metrics  # noqa: F401 - imported now, while the parent trains

        # The map MLflow needs to log the parent's model, built on this idle core; if it
        # cannot be, the parent's MLflow builds it itself.
        with contextlib.suppress(Exception):
            from kennel.serve import distributions

            distributions.write(folder / distributions.FILE_NAME)
    while not (folder / INPUTS_FILE).exists():
        if parent is not None and os.getppid() != parent:
            return  # the run died before its plots
        time.sleep(0.01)
    draw_all(folder, fork=True)
