"""Classify image files with a trained run and write one CSV row per image.

    python predict.py --run runs/vit_c10 photos/ cat.jpg --out predictions.csv [--tta]

Folders are searched recursively. Each image is read by data.read_image, the reader of the
folder loader's training images (16-bit files scaled to 8 bits, PIL convert to the run's
channels, bilinear resize to its image size), so the two cannot drift apart; then normalised
with the run's statistics. CSV columns: file, predicted_class, confidence, top5
("class:probability" pairs joined by ';'). Unreadable images are skipped with a warning.
"""
import argparse
import csv
import io
import os
import sys

import torch

from data import read_image as read_array
from evaluation import load_run, predict_logits
from utils import UserError, atomic_write_text, pick_device, run_command

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm")


def find_images(inputs):
    """(files named directly, any extension, and image files under named folders; missing paths)."""
    found, missing = [], []
    for path in inputs:
        if os.path.isfile(path):
            found.append(path)
        elif os.path.isdir(path):
            for folder, dirs, files in os.walk(path):
                dirs.sort()
                found += [os.path.join(folder, f) for f in sorted(files) if f.lower().endswith(EXTENSIONS)]
        else:
            missing.append(path)
    return found, missing


def read_image(path, in_chans, size):
    """uint8 (C, size, size) as data.py's folder loader makes it; None (and a warning) if unreadable."""
    try:
        arr = read_array(path, "L" if in_chans == 1 else "RGB", size)
    except UserError as e:
        print(f"warning: {e}; skipped", file=sys.stderr)
        return None
    return torch.from_numpy(arr).permute(2, 0, 1)


def predict_files(model, config, paths, device, batch_size=256, tta=False):
    """[(file, probabilities)] for the readable files among `paths`."""
    if config["in_chans"] not in (1, 3):
        raise UserError(f"the run has {config['in_chans']} input channels; predict.py reads grayscale or RGB")
    results = []
    for start in range(0, len(paths), batch_size):  # in chunks, so a huge folder never sits in memory
        images = [(p, read_image(p, config["in_chans"], config["image_size"])) for p in paths[start:start + batch_size]]
        images = [(p, x) for p, x in images if x is not None]
        if not images:
            continue
        x = torch.stack([x for _, x in images])
        logits = predict_logits(model, x, config["mean"], config["std"], config["input_size"], device,
                                batch_size=batch_size, tta=tta)
        results += zip([p for p, _ in images], logits.softmax(-1))
    return results


def to_csv(results, classes, k=5):
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["file", "predicted_class", "confidence", "top5"])
    for path, probs in results:
        top = probs.topk(min(k, len(probs)))
        names = [classes[i] if i < len(classes) else str(i) for i in top.indices.tolist()]
        writer.writerow([path, names[0], f"{top.values[0].item():.6f}",
                         ";".join(f"{n}:{v:.6f}" for n, v in zip(names, top.values.tolist()))])
    return buf.getvalue()


def get_args_parser():
    p = argparse.ArgumentParser(description="Classify images with a trained run.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="a run folder (config.json + model.pth)")
    src.add_argument("--weights", help="a weights file inside a run folder (e.g. checkpoint.pt)")
    p.add_argument("inputs", nargs="+", help="image files and folders (searched recursively)")
    p.add_argument("--out", default="predictions.csv")
    p.add_argument("--tta", action="store_true", help="average the softmax over each image and its mirror")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--batch-size", type=int, default=256)
    return p


def main(args):
    if args.batch_size <= 0:
        raise UserError(f"--batch-size must be positive, got {args.batch_size}")
    paths, missing = find_images(args.inputs)
    if not paths:
        raise UserError(f"no images found in {' '.join(args.inputs)}"
                        + (f" ({', '.join(missing)}: no such file or folder)" if missing else
                           f" (looked for {', '.join(EXTENSIONS)})"))
    for path in missing:
        print(f"warning: {path}: no such file or folder", file=sys.stderr)
    if os.path.isdir(args.out):  # else the error would name the temp file written next to it
        raise UserError(f"--out {args.out} is a folder; give a file name, e.g. {os.path.join(args.out, 'predictions.csv')}")
    device = pick_device(args.device)
    model, config = load_run(args.run or args.weights, device)
    results = predict_files(model, config, paths, device, args.batch_size, args.tta)
    if not results:
        raise UserError(f"none of the {len(paths)} files found could be read as an image")
    try:
        atomic_write_text(to_csv(results, config["classes"]), args.out)
    except OSError as e:  # the write goes through a temp file next to --out: name --out, not it
        raise UserError(f"cannot write --out {args.out}: {e.strerror or type(e).__name__}")
    skipped = len(paths) - len(results)
    print(f"wrote {len(results)} predictions to {args.out}" + (f" ({skipped} unreadable skipped)" if skipped else ""))
    return results


def cli(argv=None):
    return run_command(main, get_args_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli())
