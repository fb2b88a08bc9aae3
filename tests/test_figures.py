"""Each figure of a run is drawn once (issue 25): ``savefig`` on a figure that keeps a layout
engine draws it a second time without output first. The files are byte for byte those of the
two-pass save."""

from __future__ import annotations

from pathlib import Path

import matplotlib.figure
import pytest

from kennel.report import figures, plots
from tests.test_plot_sharing import inputs


def two_pass_save(fig, path, *, dpi: int = figures.DPI) -> None:
    """How every figure was saved before: the placeholder engine stays on the figure."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi, format="png")
    figures.pyplot().close(fig)


def count_draws(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The ids of the figures drawn from now on, once per draw."""
    draws: list[int] = []
    real_draw = matplotlib.figure.Figure.draw

    def counted(self, renderer):
        draws.append(id(self))
        return real_draw(self, renderer)

    monkeypatch.setattr(matplotlib.figure.Figure, "draw", counted)
    return draws


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_every_figure_is_drawn_once_into_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, task: str
) -> None:
    draws = count_draws(monkeypatch)
    once = plots.draw_all(inputs(tmp_path / "once", task))
    assert len(once) >= 6
    assert len(draws) == len(set(draws)) == len(once)

    draws.clear()
    monkeypatch.setattr(figures, "save", two_pass_save)
    twice = plots.draw_all(inputs(tmp_path / "twice", task))
    assert len(draws) == 2 * len(twice)  # what the layout engine cost
    assert [p.name for p in once] == [p.name for p in twice]
    for a, b in zip(once, twice, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_other_rooms_figures_are_drawn_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The search's history and the drift report's bars save through the same helper."""
    from kennel.monitor.drift import ColumnDrift
    from kennel.monitor.page import _plots as drift_plots
    from kennel.search.results import history_plot

    draws = count_draws(monkeypatch)
    rows = [{"number": i, "value": 0.5 + i / 100} for i in range(5)] + [
        {"number": 5, "value": None}
    ]
    assert history_plot(rows, "val_auc", "maximize", tmp_path / "history.png")
    assert len(draws) == 1

    draws.clear()
    columns = [
        ColumnDrift(
            name=f"c{i}", role="feature", verdict="drift", reason="shares moved", rows=100,
            psi=0.4, buckets=["a", "b", "c"], ref_shares=[0.2, 0.3, 0.5],
            cur_shares=[0.5, 0.3, 0.2],
        )
        for i in range(2)
    ]  # fmt: skip
    made = drift_plots(tmp_path / "drift", columns)
    assert [p.name for p in made] == ["drift_00.png", "drift_01.png"]
    assert all(p.stat().st_size > 0 for p in made)
    assert len(draws) == len(set(draws)) == 2
