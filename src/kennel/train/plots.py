"""The training run's plots: drawn in a second process (or inline, or not at all) while the run
logs and registers its model; :class:`PlotJob` is the one handle the pipeline holds."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kennel.config import Config


class PlotJob:
    """``tracking.log_plots`` off, or cancelled: every method does nothing."""

    def __init__(self, job: Any = None) -> None:
        self.job = job

    @classmethod
    def start(cls, config: Config, output_dir: Path, *, fork_safe: bool = False) -> PlotJob:
        """Start the plot process now (``tracking.plots_in_background``): it imports its
        libraries while this process loads the data and trains. Otherwise the plots are
        drawn by this process's libraries: in a fork of it once their inputs are ready, while
        the model is logged (``fork_safe``: the family's library survives a fork; Linux, no
        cluster client), else here at the end."""
        if not config.tracking.log_plots:
            return cls()
        from kennel.report import plots

        if config.tracking.plots_in_background:
            kind: Any = plots.BackgroundPlots
        elif fork_safe and config.resource.cluster == "none" and plots.can_fork():
            kind = plots.ForkedPlots
        else:
            kind = plots.InlinePlots
        return cls(kind(output_dir / "plots"))

    @property
    def folder(self) -> Path | None:
        return self.job.folder if self.job is not None else None

    def distributions_file(self) -> Path | None:
        """Where the plot process writes MLflow's distribution map, when one runs."""
        return self.job.distributions_file() if self.job is not None else None

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.job = None

    def hand_inputs(
        self,
        processor: Any,
        history: Mapping[str, list[tuple[int, float]]],
        y_test: np.ndarray,
        test_raw: np.ndarray,
        importance: Mapping[str, float] | None,
        explained: Any = None,
    ) -> None:
        """What the plots are drawn from (the drawing starts at once in the background);
        ``explained``: the contributions summary (:class:`kennel.train.explain.Explained`)."""
        if self.job is None:
            return
        from kennel.report import plots

        plots.save_inputs(
            self.job.folder,
            task=processor.task,
            labels=[str(c) for c in processor.classes],
            history=history,
            y_test=y_test,
            test_raw=test_raw,
            importance=importance,
            contributions=explained.summary if explained else None,
            dependence=explained.dependence if explained else (),
        )
        self.job.inputs_saved()

    def finish_and_log(self) -> None:
        """Wait for the drawing and log the PNGs under ``plots/``."""
        if self.job is None:
            return
        from kennel import tracking

        self.job.finish()
        tracking.log_folder(self.job.folder, artifact_path="plots")
        self._done = sorted(self.job.folder.glob("*.png"))
        self.job = None

    def files(self) -> list[Path]:
        """The PNGs drawn (for ``report.html``)."""
        return list(getattr(self, "_done", []))
