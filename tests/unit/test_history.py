"""A run's history.csv read back by evaluate.py: a run without validation (``--val-fraction 0``) has NA
in its validation columns, as Keras's CSVLogger writes them, and still gives its losses and curves."""

import numpy as np

from facelandmarks.evaluation.evaluate import history_losses
from facelandmarks.evaluation.plots import epoch_axis, learning_curves
from facelandmarks.evaluation.tables import read_history

NO_VALIDATION = """epoch,epoch_seconds,learning_rate,loss,nme,val_loss,val_nme
0,264.9,1e-4,0.0186,1.99,NA,NA
1,262.0,5e-5,0.0179,1.89,NA,NA
2,245.0,1e-6,0.0181,1.90,NA,NA
"""


def test_a_history_without_validation_reads_and_plots(tmp_path, capsys):
    (tmp_path / "history.csv").write_text(NO_VALIDATION)
    rows = read_history(tmp_path / "history.csv")
    assert len(rows) == 3 and rows[0]["val_loss"] == "" and capsys.readouterr().err == ""
    train_loss, val_loss, epoch = history_losses(tmp_path)
    assert (train_loss, epoch) == (0.0179, 2) and np.isnan(val_loss)  # the lowest training loss, no validation
    learning_curves({"run": tmp_path / "history.csv"}, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_tables_losses_are_those_of_the_best_validation_epoch(tmp_path):
    # the lowest training loss (epoch 3) and the lowest validation loss (epoch 2) are different rows
    (tmp_path / "history.csv").write_text("epoch,loss,val_loss,val_nme\n0,0.05,0.040,9.0\n1,0.03,0.020,7.0\n"
                                          "2,0.02,0.025,7.5\n")
    assert history_losses(tmp_path) == (0.03, 0.02, 2)
    train_loss, val_loss, epoch = history_losses(tmp_path / "elsewhere")  # no history.csv: nothing to report
    assert np.isnan(train_loss) and np.isnan(val_loss) and epoch is None


def test_a_damaged_history_is_named_and_left_out(tmp_path, capsys):
    (tmp_path / "history.csv").write_text("epoch,loss\n0,not-a-number\n")
    assert read_history(tmp_path / "history.csv") == []
    assert "history.csv: unreadable history" in capsys.readouterr().err


def test_the_epoch_axis_is_ticked_at_whole_epochs_for_any_length():
    import matplotlib.pyplot as plt

    for last in (1, 2, 7, 120):
        fig, ax = plt.subplots()
        ax.plot(range(1, last + 1), np.ones(last))
        epoch_axis(ax, last)
        fig.canvas.draw()
        low, high = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if low <= t <= high]
        plt.close(fig)
        assert ticks and all(float(t).is_integer() for t in ticks), (last, ticks)
        assert (low, high) == (0.5, last + 0.5)


def test_the_loss_legend_shows_the_train_lines_dashes(tmp_path):
    """Train loss is dashed, validation loss solid: in the legend the dashes must show beside the dot on the line."""
    import re

    (tmp_path / "history.csv").write_text("epoch,loss,val_loss,val_nme\n0,0.03,0.02,9.0\n1,0.02,0.015,7.0\n")
    learning_curves({"run": tmp_path / "history.csv"}, tmp_path / "curves.svg")
    svg = (tmp_path / "curves.svg").read_text()
    legend = svg[svg.index('id="legend_1"'):]
    handle = re.search(r'<path d="M ([\d.]+) [\d.]+\s+L [\d.]+ [\d.]+\s+L ([\d.]+) [\d.]+\s*" style="[^"]*'
                       r'stroke-dasharray: ([\d.]+),([\d.]+)[^"]*"/>\s*<g>\s*<use xlink:href="#(m[0-9a-f]+)" x="([\d.]+)"',
                       legend)
    assert handle, "no dashed line with a dot in the loss legend"
    start, end, on, off = map(float, handle.groups()[:4])
    dot, centre = handle.group(5), float(handle.group(6))
    shape = re.search(rf'<path id="{dot}" d="([^"]+)"', svg).group(1)
    radius = max(abs(float(v)) for v in re.findall(r"-?\d+\.?\d*", shape)) + 0.5  # and half its edge
    gaps, x = [], start + on
    while x < end:
        gaps.append((x, min(x + off, end)))
        x += on + off
    # a gap shows where at least a point of it lies off the dot (a sliver at the line's end does not)
    visible = [g for g in gaps if min(g[1], centre - radius) - g[0] >= 1 or g[1] - max(g[0], centre + radius) >= 1]
    assert visible, f"the dot at {centre:.1f} covers every gap {gaps} of the dashed train line: it looks solid"


def test_one_history_given_under_two_names_is_one_curve_with_both(tmp_path):
    import matplotlib

    (tmp_path / "history.csv").write_text("epoch,loss,val_loss,val_nme\n0,0.03,0.02,9.0\n1,0.02,0.015,7.0\n")
    (tmp_path / "other.csv").write_text("epoch,loss,val_loss,val_nme\n0,0.05,0.04,12.0\n1,0.04,0.03,10.0\n")
    histories = {"cascade: stage 1 (scratch)": tmp_path / "history.csv", "other": tmp_path / "other.csv",
                 "scratch": tmp_path / ".." / tmp_path.name / "history.csv"}  # a pipeline's stage 1, also given alone
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # legend labels as text in the file
        learning_curves(histories, tmp_path / "curves.svg")
    svg = (tmp_path / "curves.svg").read_text()
    assert svg.count("cascade: stage 1 (scratch) = scratch train") == 1 and svg.count("other val") == 1
    assert ">scratch train<" not in svg  # it was drawn again over the first, hiding it


def test_an_epoch_without_validation_is_never_the_best_and_stops_nothing(tmp_path):
    # as Keras's CSVLogger writes an epoch that logged no validation value: NA, read back as ''
    (tmp_path / "history.csv").write_text("epoch,loss,val_loss,val_nme\n0,0.05,NA,NA\n1,0.03,0.020,7.0\n"
                                          "2,0.02,NA,NA\n3,0.025,0.022,7.2\n")
    assert history_losses(tmp_path) == (0.03, 0.02, 2)  # was ValueError: could not convert string to float: ''


def test_each_panel_of_the_learning_curves_says_what_it_shows(tmp_path):
    import matplotlib

    (tmp_path / "history.csv").write_text("epoch,loss,val_loss,val_nme\n0,0.03,0.02,9.0\n1,0.02,0.015,7.0\n")
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        learning_curves({"run": tmp_path / "history.csv"}, tmp_path / "curves.svg")
    svg = (tmp_path / "curves.svg").read_text()
    # the panels had no titles, and 'loss' did not say which lines were training and which validation
    assert "Training objective (train dashed, validation solid)" in svg and "Validation NME" in svg
    assert "loss (each run&#39;s own, log scale)" in svg or "loss (each run's own, log scale)" in svg
