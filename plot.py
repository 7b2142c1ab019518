"""Pictures of a run: learning curves from metrics.csv and confusion matrices.

    python plot.py runs/vit_c10                       # writes runs/vit_c10/curves.png
    python plot.py runs/a runs/b --out compare.png    # overlays runs, one colour each

Train curves are dashed, validation (--val-split, --folds) dotted, test solid; the legend
names each run by its folder. --out's extension picks the format: any matplotlib can write
(png, pdf, svg, jpg, ...); with none, .png is added.
"""
import argparse
import os
import sys
import warnings

import matplotlib

matplotlib.use("Agg")  # files only: works without a display, on servers and in tests
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.backend_bases import FigureCanvasBase  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from utils import UserError, run_command  # noqa: E402

CURVES = "curves.png"
# Class names in scripts the default font lacks (CJK, emoji) draw as boxes; one warning per glyph is noise.
warnings.filterwarnings("ignore", message="Glyph .* missing from font", category=UserWarning)


def read_metrics(path):
    """A run folder's (or a CSV file's) metrics as a DataFrame, with a clear error if there is none."""
    csv_path = os.path.join(path, "metrics.csv") if os.path.isdir(path) else path
    if not os.path.isfile(csv_path):
        raise UserError(f"{path}: no metrics.csv (pass a run folder written by main.py, or the CSV)")
    try:
        frame = pd.read_csv(csv_path)
    except (ValueError, OSError) as e:  # pandas raises EmptyDataError / ParserError, both ValueErrors
        raise UserError(f"cannot read {csv_path}: {str(e).splitlines()[0]}")
    if "epoch" not in frame or frame.empty:
        raise UserError(f"{csv_path} holds no epoch rows")
    return frame


def run_label(path):
    path = os.path.abspath(path)
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    return os.path.basename(folder.rstrip(os.sep))


def draw_curves(frames):
    """A figure of loss, accuracy and learning rate per epoch; `frames` maps label -> DataFrame."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, df) in enumerate(frames.items()):
        colour = colours[i % len(colours)]
        for ax, metric in zip(axes[:2], ("loss", "acc")):
            labelled = False
            for split, style in (("test", "-"), ("val", ":"), ("train", "--")):
                column = f"{split}_{metric}"
                if column in df:
                    # One legend entry per run (on its first curve), not one per line.
                    ax.plot(df["epoch"], df[column], style, color=colour, label=None if labelled else label,
                            marker="." if len(df) <= 20 else None)  # a 1-epoch run is a point, not a line
                    labelled = True
        if "lr" in df:
            axes[2].plot(df["epoch"], df["lr"], color=colour, label=label)
    # Name only the line styles drawn: "dotted: val" on a run without a validation split misleads.
    present = {split for df in frames.values() for split in ("train", "val", "test")
               if any(f"{split}_{m}" in df for m in ("loss", "acc"))}
    splits = ", ".join(f"{style}: {split}" for split, style in (("train", "dashed"), ("val", "dotted"), ("test", "solid"))
                       if split in present)
    for ax, title in zip(axes, (f"loss ({splits})", f"accuracy ({splits})", "learning rate (end of epoch)")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[1].legend(loc="lower right")
    fig.tight_layout()
    return fig


def image_path(out):
    """`out`, with .png added when it has no extension; a one-line UserError for a format
    matplotlib cannot write (it would raise deep inside savefig, after the drawing)."""
    ext = os.path.splitext(out)[1].lower().lstrip(".")
    if not ext:
        return out + ".png"
    formats = FigureCanvasBase.get_supported_filetypes()
    if ext not in formats:
        raise UserError(f"--out {out}: cannot write .{ext} images; use one of {', '.join('.' + f for f in sorted(formats))}")
    return out


def plot_curves(paths, out):
    """Curves of one or several runs (folders or metrics CSVs) into the image `out`; returns its path."""
    out = image_path(out)
    frames = {}
    for path in paths:
        label = run_label(path)
        while label in frames:  # two runs in folders of the same name: keep both
            label += "'"
        frames[label] = read_metrics(path)
    fig = draw_curves(frames)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_run(run_dir):
    """curves.png in the run folder; returns its path."""
    return plot_curves([run_dir], os.path.join(run_dir, CURVES))


def plot_confusion(confusion, classes, path):
    """Raw counts and row-normalised rates (rows: true class) side by side."""
    counts = np.asarray(confusion, dtype=float)
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    n = len(classes)
    side = min(max(4.0, 0.45 * n + 2), 24)
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 1, side))
    for ax, matrix, title, fmt in ((axes[0], counts, "counts", "{:.0f}"), (axes[1], rates, "row-normalised", "{:.2f}")):
        im = ax.imshow(matrix, cmap="Blues", vmin=0)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        ax.set_title(title)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if n <= 30:  # beyond that, the labels and numbers are unreadable anyway
            ax.set_xticks(range(n), classes, rotation=90)
            ax.set_yticks(range(n), classes)
        if n <= 15:
            top = matrix.max() if matrix.size else 0
            for (r, c), v in np.ndenumerate(matrix):
                ax.text(c, r, fmt.format(v), ha="center", va="center", fontsize=8,
                        color="white" if v > top / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def get_args_parser():
    p = argparse.ArgumentParser(description="Draw learning curves of one or several runs.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (or their metrics.csv files)")
    p.add_argument("--out", default=None,
                   help=f"image to write (default: RUN_DIR/{CURVES} for one run, {CURVES} here for several)")
    return p


def main(args):
    out = args.out or (os.path.join(args.runs[0], CURVES) if len(args.runs) == 1 and os.path.isdir(args.runs[0])
                       else CURVES)
    out = plot_curves(args.runs, out)
    print(f"wrote {out}")
    return out


def cli(argv=None):
    return run_command(main, get_args_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli())
