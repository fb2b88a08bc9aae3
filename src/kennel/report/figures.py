"""The figures of a run's report, saved as PNG files (matplotlib's Agg backend, scikit-learn's
displays): learning curves, confusion matrix, ROC, residuals, feature importance and
contributions. :mod:`kennel.report.plots` decides which a training run draws and where.

matplotlib (and scikit-learn's displays) are imported inside the functions, only when a plot
is drawn. Curves and scatter plots draw at most :data:`MAX_PLOT_ROWS` rows (a seeded sample
of larger sets: drawing a million points costs seconds and shows nothing more); the
confusion matrix only counts, so it always uses every row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

#: Rows drawn by the ROC and residual plots; larger sets are sampled (seed ``SAMPLE_SEED``).
MAX_PLOT_ROWS = 20_000
SAMPLE_SEED = 0
#: Resolution of every saved plot (small files, fast to render).
DPI = 80


def _sample(*arrays: np.ndarray) -> tuple[tuple[np.ndarray, ...], bool]:
    """The same seeded ``MAX_PLOT_ROWS`` rows of each array (in their original order), and
    whether they were sampled; arrays that small already come back unchanged."""
    n = len(arrays[0])
    if n <= MAX_PLOT_ROWS:
        return arrays, False
    rows = np.sort(np.random.default_rng(SAMPLE_SEED).choice(n, MAX_PLOT_ROWS, replace=False))
    return tuple(np.asarray(a)[rows] for a in arrays), True


def _suffix(sampled: bool) -> str:
    return f", {MAX_PLOT_ROWS:,}-row sample" if sampled else ""


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


#: matplotlib's pyplot with the Agg backend, for other rooms' figures.
pyplot = _pyplot


def save(fig: Any, path: Path | IO[bytes], *, dpi: int = DPI) -> None:
    """Lay ``fig`` out tightly, write it as PNG and close it.

    ``tight_layout`` leaves a placeholder layout engine on the figure, and ``savefig`` on a
    figure with any layout engine first draws it once without output to give the engine its
    renderer: a second pass over every artist (~15 % of a plot's cost) that changes no pixel.
    The engine is removed after the layout, so each figure is drawn once."""
    fig.tight_layout()
    fig.set_layout_engine(None)
    fig.savefig(path, dpi=dpi, format="png")
    _pyplot().close(fig)


def warm_up() -> None:
    """Draw one small figure: the first drawing in a process loads fonts and builds caches
    (about half a second), which the search's warm trial server pays once for every trial."""
    import io

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1], label="warm-up")
    ax.set_xlabel("x")
    ax.set_title("warm-up")
    ax.legend()
    save(fig, io.BytesIO(), dpi=40)


def learning_curve(history: Mapping[str, Sequence[tuple[int, float]]], path: Path) -> Path | None:
    """One panel per metric that has a curve (more than one step: ``test_*`` and other
    once-logged values have none), two panels a row, each large enough to read in the MLflow
    UI's artifact view and in ``report.html``."""
    series = {k: v for k, v in history.items() if len({s for s, _ in v}) > 1}
    if not series:
        return None
    plt = _pyplot()
    cols = min(2, len(series))
    rows = -(-len(series) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.4 * rows), squeeze=False)
    for ax, (name, points) in zip(axes.flat, sorted(series.items()), strict=False):
        steps, values = zip(*sorted(points), strict=True)
        ax.plot(steps, values, linewidth=1.6)
        ax.set_title(name, fontsize=12)
        ax.set_xlabel("iteration / epoch", fontsize=10)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(series) :]:
        ax.set_visible(False)
    save(fig, path)
    return path


def confusion_matrix(
    y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str], path: Path
) -> Path:
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ConfusionMatrixDisplay.from_predictions(
        y_true,
        y_pred,
        labels=list(range(len(labels))),
        display_labels=list(labels),
        ax=ax,
        colorbar=False,
    )
    ax.set_title("confusion matrix (test)")
    save(fig, path)
    return path


def roc(y_true: np.ndarray, proba: np.ndarray, labels: Sequence[str], path: Path) -> Path:
    """ROC curve (binary) or one-vs-rest curves (multiclass)."""
    from sklearn.metrics import RocCurveDisplay

    (y_true, proba), sampled = _sample(np.asarray(y_true), np.asarray(proba))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    if proba.shape[1] == 2:
        RocCurveDisplay.from_predictions(y_true, proba[:, 1], ax=ax, name=str(labels[1]))
        positive = f"'{labels[1]}' is positive"
    else:
        for i, label in enumerate(labels):
            if (y_true == i).any() and (y_true != i).any():
                RocCurveDisplay.from_predictions(y_true == i, proba[:, i], ax=ax, name=str(label))
        positive = "each class against the rest"
    # scikit-learn's axis labels name the positive class by its code ("Positive label: 1")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"ROC (test{_suffix(sampled)}; {positive})", fontsize=10)
    save(fig, path)
    return path


def residuals(y_true: np.ndarray, y_pred: np.ndarray, path: Path) -> Path:
    (y_true, y_pred), sampled = _sample(np.asarray(y_true), np.asarray(y_pred))
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    axes[0].scatter(y_pred, y_true - y_pred, s=8, alpha=0.6)
    axes[0].axhline(0, color="grey", lw=1)
    axes[0].set_xlabel("predicted")
    axes[0].set_ylabel("residual")
    axes[1].scatter(y_true, y_pred, s=8, alpha=0.6)
    lo, hi = float(np.min(y_true)), float(np.max(y_true))
    axes[1].plot([lo, hi], [lo, hi], color="grey", lw=1)
    axes[1].set_xlabel("actual")
    axes[1].set_ylabel("predicted")
    fig.suptitle(f"residuals (test{_suffix(sampled)})")
    save(fig, path)
    return path


def feature_importance(importance: Mapping[str, float], path: Path, top: int = 25) -> Path:
    items = sorted(importance.items(), key=lambda kv: kv[1], reverse=True)[:top][::-1]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 0.25 * len(items) + 1))
    ax.barh([k for k, _ in items], [v for _, v in items])
    ax.set_title("feature importance")
    ax.set_xlabel("total gain of the splits on the feature")
    save(fig, path)
    return path


def contribution_bars(summary: Mapping[str, Any], path: Path) -> Path:
    """Mean absolute contribution of each input column (``contributions.json``), top 20."""
    items = list(summary["mean_abs"].items())[:20][::-1]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(items) + 1.2))
    ax.barh([k for k, _ in items], [v for _, v in items])
    ax.set_xlabel(f"mean |contribution| to the {summary['output']}")
    ax.set_title(f"what drives the predictions ({summary['rows']} test rows)")
    save(fig, path)
    return path


def dependence_plot(points: Mapping[str, Any], path: Path) -> Path:
    """A column's value against its contribution: numbers as points, categories (and text)
    as one strip per value (the 15 most frequent)."""
    name, values, contrib = points["name"], points["values"], points["contrib"]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    if points["numeric"]:
        ax.scatter(values, contrib, s=8, alpha=0.5)
        ax.set_xlabel(name)
    else:
        labels, counts = np.unique(values, return_counts=True)
        order = labels[np.argsort(-counts, kind="stable")][:15]
        for i, label in enumerate(order):
            picked = contrib[values == label]
            jitter = np.random.default_rng(i).uniform(-0.2, 0.2, len(picked))
            ax.scatter(i + jitter, picked, s=8, alpha=0.5)
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels([str(o)[:16] for o in order], rotation=45, ha="right", fontsize=8)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_ylabel("contribution")
    ax.set_title(f"{name}: value and contribution", fontsize=10)
    save(fig, path)
    return path
