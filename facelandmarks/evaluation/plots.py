"""PNG plots for evaluate.py: cumulative error curves, best/worst gallery, learning curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from facelandmarks import metrics
from facelandmarks.drawing import draw_crop
from facelandmarks.evaluation.tables import read_history
from facelandmarks.files import written_whole


def ced_plot(nmes: dict[str, np.ndarray], path: Path, threshold: float = 0.10, title: str = "",
             normaliser: str = "the outer-eye-corner distance") -> None:
    """All models' cumulative error distributions on one plot, AUC in the legend (below the axes).

    ``normaliser``: what the NME is a percentage of (``tables.normaliser(scheme)``).

    Curves whose per-face errors are identical (a pipeline's stage 1 is also
    its own run) are drawn once, with the names joined.
    """
    curves: list[tuple[list[str], np.ndarray]] = []
    for name, nme in nmes.items():
        same = next((c for c in curves if c[1].shape == nme.shape and np.array_equal(c[1], nme, equal_nan=True)), None)
        if same is not None:
            same[0].append(name)
        else:
            curves.append(([name], nme))
    colours = plt.get_cmap("tab10" if len(curves) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(7.5, 4.6 + 0.22 * len(curves)), dpi=120)
    for i, (names, nme) in enumerate(curves):
        if not np.isfinite(nme).any():  # no face it could score: named in the legend, no curve
            ax.plot([], [], label=f"{' = '.join(names)}  (no face scored)", color=colours(i), linestyle=":")
            continue
        xs, ys = metrics.ced(nme, threshold)
        label = f"{' = '.join(names)}  (AUC@{threshold * 100:g} {metrics.auc(nme, threshold):.3f}, NME {100 * np.nanmean(nme):.2f}%)"
        ax.plot(xs * 100, ys, label=label, linewidth=1.8, color=colours(i), linestyle="-" if i < 10 else "--")
    for t in metrics.THRESHOLDS:  # the tables' thresholds inside the plot: a curve's height there is 1 - FR@t
        if 0 < t < threshold:
            ax.axvline(t * 100, color="0.35", linestyle="--", linewidth=0.9, zorder=1,  # named in the legend:
                       label=f"NME {t * 100:g} %: FR@{t * 100:g} = 1 − a curve's height here, AUC@{t * 100:g} its area to the left ÷ {t * 100:g}")
    ax.set_xlabel(f"NME (% of {normaliser})")
    ax.set_ylabel("fraction of faces")
    ax.set_xlim(0, threshold * 100)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(f"Cumulative error distribution {title}".strip())
    ax.legend(loc="upper left", bbox_to_anchor=(0, -0.12), fontsize=8, frameon=False)
    fig.tight_layout()
    with written_whole(path) as partial:
        fig.savefig(partial, bbox_inches="tight")
    plt.close(fig)


def gallery(arrays: dict, predictions: dict[str, np.ndarray], nmes: dict[str, np.ndarray], path: Path, count: int = 6) -> None:
    """For each model, its ``count`` best and worst faces: ground truth green, prediction red."""
    names = list(predictions)
    fig = plt.figure(figsize=(1.9 * count, 0.4 + 4.6 * len(names)), dpi=110, layout="constrained")
    fig.suptitle("green: ground truth, red: prediction", fontsize=9)
    for name, panel in zip(names, np.atleast_1d(fig.subfigures(len(names), 1))):
        panel.suptitle(name, fontsize=9, fontweight="bold")  # the whole name: two runs' names may differ at the end
        axes = panel.subplots(2, count, squeeze=False)
        nme = nmes[name]
        order = np.argsort(np.where(np.isnan(nme), np.inf, nme))
        scored = order[: int((~np.isnan(nme)).sum())]
        picks = [("best", scored[:count]), ("worst", scored[::-1][:count])]
        for r, (label, indices) in enumerate(picks):
            for c in range(count):
                ax = axes[r, c]
                ax.axis("off")
                if c >= len(indices):
                    continue
                i = indices[c]
                image = arrays["images"][i]
                scale = max(1, 160 // image.shape[0])
                ax.imshow(draw_crop(image, predictions[name][i], arrays["landmarks"][i], arrays["visible"][i], scale=scale))
                ax.set_title(f"{label} {c + 1}: NME {100 * nme[i]:.1f}%", fontsize=7)
    with written_whole(path) as partial:
        fig.savefig(partial)
    plt.close(fig)


def epoch_axis(ax, last: int) -> None:
    """Epochs 1 to ``last`` on the x axis, ticked at whole epochs only (a run of one epoch was ticked at
    0.945, 0.960 ...: the integer locator gives up where fewer than two whole numbers lie in the range)."""
    ax.set_xlim(0.5, last + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def learning_curves(histories: dict[str, Path], path: Path) -> None:
    """Training and validation loss, and validation NME, per epoch for each run.

    Rows with one history.csv (a pipeline's stage 1 that is also given as a run) are drawn once, with the names
    joined, as in the CED (the second curve hid the first).
    """
    runs: list[tuple[list[str], Path]] = []
    for name, file in histories.items():
        same = next((r for r in runs if Path(r[1]).resolve() == Path(file).resolve()), None)
        if same is not None:
            same[0].append(name)
        else:
            runs.append(([name], file))
    fig, (loss_ax, nme_ax) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=110)
    last = 1
    for i, (name, file) in enumerate((" = ".join(names), file) for names, file in runs):
        if not Path(file).is_file():
            continue
        rows = read_history(Path(file))
        if not rows:
            continue
        epochs = [int(r["epoch"]) + 1 for r in rows]
        last = max(last, *epochs)
        color = f"C{i % 10}"

        def column(key, rows=rows):
            return [float(r[key]) if r.get(key) not in (None, "") else np.nan for r in rows]

        dots = {"marker": "o", "markersize": 3}  # a run of one epoch is a point, not an invisible line
        loss_ax.plot(epochs, column("loss"), color=color, linestyle="--", label=f"{name} train", **dots)
        if "val_loss" in rows[0]:
            loss_ax.plot(epochs, column("val_loss"), color=color, label=f"{name} val", **dots)
        if "val_nme" in rows[0]:
            nme_ax.plot(epochs, column("val_nme"), color=color, label=name, **dots)
    loss_ax.set_yscale("log")
    loss_ax.set_title("Training objective (train dashed, validation solid)", fontsize=10)
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss (each run's own, log scale)")
    loss_ax.legend(fontsize=7, handlelength=4)  # at the default length the dot hid the train line's one gap
    loss_ax.grid(alpha=0.3)
    for ax in (loss_ax, nme_ax):
        epoch_axis(ax, last)
    nme_ax.set_title("Validation NME", fontsize=10)
    nme_ax.set_xlabel("epoch")
    nme_ax.set_ylabel("validation NME %")
    nme_ax.legend(fontsize=7)
    nme_ax.grid(alpha=0.3)
    fig.tight_layout()
    with written_whole(path) as partial:
        fig.savefig(partial)
    plt.close(fig)
