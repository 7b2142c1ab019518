"""The one GPU check: every figure the project needs from a lent GPU, in one command.

    bash tools/gpu_check.sh                    # on the GPU machine, from the repository root
    python tools/gpu_check.py --tiny --device cpu --out /tmp/x   # the CPU dry run the tests use

Measures (the batch-128 step rows and the input-path rows first, so a run cut short still
leaves the target figures), and writes `gpu_check.json` plus one log per item under --out after EACH
item:

  a. the training step alone (data on the device, no augmentation), img/s at each --batches,
     eager and with each --compile-modes (on: the model compiled; step: the whole step compiled;
     graphs: the step captured in a CUDA graph), plus warm-up (compile) seconds and graph counts
  b. the augmentation alone, img/s per policy at the largest batch
  c. the whole device input path with AutoAugment and with no augmentation (each
     --pipeline-compile mode), and the workers input path with each of --workers
  d. evaluation img/s (inside each bench row)
  e. compile seconds and graph counts (inside each compiled row)
  f. a --epochs epoch run of main.py on the CIFAR-10 JPEG copy (--data-dir), per-epoch time

Nothing here needs comet-ml or the internet. Every figure is measured; none is estimated.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

import bench  # noqa: E402


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for gpu_check.json and the logs")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batches", default="128,512,1024")
    p.add_argument("--compile-modes", default="on,step,graphs,reduce-overhead")
    p.add_argument("--pipeline-compile", default="on,graphs",
                   help="the --compile modes of the input-path rows (c); the first one also serves the workers rows")
    p.add_argument("--policies", default="autoaugment,randaugment,trivialaugment",
                   help="the policies item b times alone, eager and compiled")
    p.add_argument("--workers", default="8,16")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--data-dir", default=None, help="CIFAR-10 as an ImageFolder tree (train/, test/) for item f")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--tiny", action="store_true", help="a tiny model and few steps: a dry run of the script itself")
    return p


def tiny_flags(args):
    return ["--num-layers", "1", "--hidden", "32", "--mlp-hidden", "32", "--head", "2"] if args.tiny else []


def bench_row(args, flags, log):
    """One bench.py measurement with the given flags; its table goes to `log`."""
    argv = ["--device", args.device, "--steps", str(args.steps), "--warmup-steps", "2" if args.tiny else "10",
            "--label-smoothing", *tiny_flags(args), *flags]
    if args.tiny:
        argv += ["--train-images", "64", "--eval-batch-size", "16"]
    parsed = bench.get_args_parser().parse_args(argv)
    start = time.perf_counter()
    with open(log, "w") as f:
        stdout, sys.stdout = sys.stdout, f
        try:
            r = bench.main(parsed)
        finally:
            sys.stdout = stdout
    r["wall_seconds"], r["flags"] = time.perf_counter() - start, " ".join(argv)
    return r


def augmentation_alone(args, batch):
    """img/s of each policy's batched transform alone, on uint8 CIFAR-sized batches."""
    from augment import build_policy
    device = torch.device(args.device)
    x = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, device=device)
    out = {}
    for name in [p for p in args.policies.split(",") if p]:
        _, policy = build_policy(name)
        policy = policy.to(device)
        # Eager, and compiled as the device path runs it under --compile (fullgraph, static shapes).
        for mode, fn in (("eager", policy), ("compiled", torch.compile(policy, fullgraph=True, dynamic=False))):
            reps = 3 if args.tiny else 50
            for _ in range(3):
                fn(x)
            bench.synchronize(device)
            start = time.perf_counter()
            for _ in range(reps):
                fn(x)
            bench.synchronize(device)
            out[f"{name}_{mode}"] = reps * batch / (time.perf_counter() - start)
    return out


def run_epochs(args, out_dir):
    """main.py as users run it (the seed's flags), for --epochs epochs, on the JPEG copy."""
    run_dir = os.path.join(out_dir, "run")
    cmd = [sys.executable, os.path.join(ROOT, "main.py"), "--dataset", "folder", "--data-dir", args.data_dir,
           "--label-smoothing", "--autoaugment", "--max-epochs", str(args.epochs), "--output-dir", run_dir,
           "--no-progress", "--device", args.device, *tiny_flags(args)]
    if args.tiny:
        cmd += ["--batch-size", "16", "--workers", "0", "--train-subset", "64"]
    start = time.perf_counter()
    with open(os.path.join(out_dir, "run.log"), "w") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    result = {"command": " ".join(cmd[1:]), "exit_code": code, "wall_seconds": time.perf_counter() - start}
    metrics = os.path.join(run_dir, "metrics.csv")
    if os.path.exists(metrics):
        import csv
        rows = list(csv.DictReader(open(metrics)))
        result["epoch_seconds"] = [float(r["epoch_seconds"]) for r in rows]
        result["train_images_per_second"] = [float(r["train_images_per_second"]) for r in rows]
        result["test_acc"] = [float(r["test_acc"]) for r in rows]
    return result


def main(args):
    os.makedirs(args.out, exist_ok=True)
    results = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "torch": torch.__version__,
               "device": torch.cuda.get_device_name() if args.device == "cuda" else args.device}

    def save():
        with open(os.path.join(args.out, "gpu_check.json"), "w") as f:
            json.dump(results, f, indent=2)

    def item(key, fn, *a):
        print(f"[gpu_check] {key} ...", flush=True)
        try:
            results[key] = fn(*a)
        except Exception as e:  # keep going: one broken item must not cost the others
            results[key] = {"error": f"{type(e).__name__}: {e}"}
        print(f"[gpu_check] {key}: {json.dumps(results[key])[:400]}", flush=True)
        save()

    batches = [int(b) for b in args.batches.split(",")]
    modes = ["off"] + [m for m in args.compile_modes.split(",") if m]
    pipeline_modes = [m for m in args.pipeline_compile.split(",") if m] or ["off"]

    def steps_at(b):  # a, d, e
        for mode in modes:
            item(f"step_b{b}_compile_{mode}", bench_row, args,
                 ["--batch-size", str(b), "--compile", mode, "--skip-dataloader", "--skip-pipeline"],
                 os.path.join(args.out, f"step_b{b}_{mode}.log"))

    # The target figures first (batch 128: the step, and the whole device path with and without
    # AutoAugment), so that a run cut short still has them.
    steps_at(batches[0])
    for mode in pipeline_modes:  # c
        for flags, key in [([], "pipeline_none"), (["--autoaugment"], "pipeline_autoaugment")]:
            key = key if mode == pipeline_modes[0] else f"{key}_compile_{mode}"
            item(key, bench_row, args, ["--batch-size", str(batches[0]), "--compile", mode, "--skip-dataloader",
                                        *flags], os.path.join(args.out, key + ".log"))
    item("augmentation_alone_b%d" % batches[-1], augmentation_alone, args, batches[-1])  # b
    for b in batches[1:]:
        steps_at(b)
    for w in [int(w) for w in args.workers.split(",") if w]:
        item(f"workers_{w}", bench_row, args, ["--batch-size", str(batches[0]), "--compile", pipeline_modes[0],
                                               "--autoaugment", "--workers", str(w)],
             os.path.join(args.out, f"workers_{w}.log"))
    if args.data_dir:  # f
        item("run_epochs", run_epochs, args, args.out)
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    save()
    return results


if __name__ == "__main__":
    main(get_args_parser().parse_args())
