"""Benchmark of the batched AutoAugment: the old implementation (git 06903ba, which groups the
images per (op, magnitude) in a Python loop) against the new fixed-op-count one, CIFAR-10 policy.

    python tools/bench_augment.py --threads 2                 # CPU, batches 128 and 512
    python tools/bench_augment.py --device cuda --json a.json

One run, one thread count, CIFAR-sized random uint8 batches; each figure is the median of
--repeats timed calls after --warmup untimed ones, the old and new calls interleaved so that a
noisy machine slows both alike. The old code implements torchvision's semantics, so the new one is
timed with both its semantics: "original" (the default, PIL's) and "torchvision". A benchmark, not
a test: it asserts nothing.
"""
import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

import autoaugment  # noqa: E402

OLD_COMMIT = "06903ba"


def load_old(commit=OLD_COMMIT):
    """autoaugment.py as of `commit`, imported from a temporary copy under another module name."""
    source = subprocess.run(["git", "-C", ROOT, "show", f"{commit}:autoaugment.py"], check=True,
                            capture_output=True, text=True).stdout
    folder = tempfile.mkdtemp(prefix="bench_augment_")
    path = os.path.join(folder, "old_autoaugment.py")
    with open(path, "w") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("old_autoaugment", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batches", default="128,512")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--compile", action="store_true", help="also time the new apply under torch.compile")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    return p


def main(args):
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    old = load_old()
    new_original = autoaugment.BatchAutoAugment("cifar10").to(device)
    new_torchvision = autoaugment.BatchAutoAugment("cifar10", ops="torchvision").to(device)
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        x = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, device=device)
        # The old code takes a CPU generator; the new one draws on the batch's device.
        runs = {
            "old": lambda i: old.BatchAutoAugment("cifar10")(x, torch.Generator().manual_seed(i)),
            "new_original": lambda i: new_original(x, torch.Generator(device).manual_seed(i)),
            "new_torchvision": lambda i: new_torchvision(x, torch.Generator(device).manual_seed(i)),
        }
        if args.compile:
            compiled = torch.compile(new_original.apply, fullgraph=True)
            start = time.perf_counter()
            compiled(x, new_original.draw(batch, device))
            sync()
            print(f"batch {batch}: compiled in {time.perf_counter() - start:.1f} s")
            runs["new_original_compiled"] = lambda i: compiled(
                x, new_original.draw(batch, device, torch.Generator(device).manual_seed(i)))
        times = {name: [] for name in runs}
        for i in range(args.warmup + args.repeats):
            for name, run in runs.items():
                sync()
                start = time.perf_counter()
                run(i)
                sync()
                if i >= args.warmup:
                    times[name].append(time.perf_counter() - start)
        row = {"batch": batch}
        for name, ts in times.items():
            row[f"{name}_img_s"] = batch / statistics.median(ts)
        for name in runs:
            if name != "old":
                row[f"{name}_vs_old"] = row[f"{name}_img_s"] / row["old_img_s"]
        rows.append(row)
    figures = {"device": str(device), "threads": args.threads, "policy": "autoaugment-cifar10",
               "image_shape": [3, 32, 32], "repeats": args.repeats, "old_commit": OLD_COMMIT, "rows": rows}
    names = [n for n in rows[0] if n.endswith("_img_s")]
    print(f"AutoAugment cifar10 on {device}, {args.threads} threads, median of {args.repeats}")
    print(f"{'batch':>6} " + " ".join(f"{n[:-6]:>22}" for n in names) + "   new/old")
    for row in rows:
        ratios = " ".join(f"{row[n[:-6] + '_vs_old']:.2f}x" for n in names if n != "old_img_s")
        print(f"{row['batch']:>6} " + " ".join(f"{row[n]:>16.0f} img/s" for n in names) + f"   {ratios}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return figures


if __name__ == "__main__":
    main(get_args_parser().parse_args())
