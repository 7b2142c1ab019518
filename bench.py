"""Throughput benchmark: how fast one device trains and evaluates a model, and how much of
that the input pipeline costs.

    python bench.py --model-name vit --batch-size 128 --autoaugment --label-smoothing --steps 100

It takes every main.py flag (model, batch, augmentation, precision, compile) plus --steps and
--json, and measures with the real training step (engine.train_one_epoch) on synthetic images:

  train       data already on the device as normalised floats, no augmentation: the step alone
  pipeline    the device input path: crop, flip, policy, normalise, extras, mixup/cutmix
  dataloader  the worker input path: PIL transforms in --workers DataLoader workers
  eval        engine.evaluate at --eval-batch-size

and reports achieved TFLOP/s from a counted FLOP figure (torch.utils.flop_counter) against a
matrix-multiply peak measured on the same device in the same call. The table comes last.
--profile-steps N then profiles N more steps of the step alone (torch.profiler): on CUDA the
kernels per step, the device's busy and idle time per step and the costliest kernels, which say
whether a step waits for the host or for its own kernels. --graph-grads picks how a
--compile graphs capture keeps its gradients (fused_step.py), so both can be timed.

    python bench.py --audit --batch-size 128 --autoaugment --json audit.json

runs the device input path and the training step on the `meta` device instead (no GPU needed)
and counts, per step, the host reads of device values, the blocking host-to-device copies and
the device ops (sync_audit.py): what decides whether a GPU is ever left waiting.
"""
import contextlib
import importlib
import json
import os
import resource
import sys
import tempfile
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import build
from flags import get_args_parser as training_args_parser
from criterions import CRITERIONS
from data import Data
from engine import evaluate, synchronize, train_one_epoch, train_step
from fused_step import FusedStep
from sync_audit import audit
from models import build_model
from utils import UserError, pick_device, seed_everything


def get_args_parser():
    parser = training_args_parser()
    parser.description = "Measure training, input-pipeline and evaluation throughput."
    parser.add_argument("--steps", type=int, default=50, help="timed training steps per measurement")
    parser.add_argument("--warmup-steps", type=int, default=10, help="untimed steps first (compilation, caches)")
    parser.add_argument("--train-images", type=int, default=None,
                        help="synthetic training set size (default: 50000 on CUDA, 2048 elsewhere)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--skip-dataloader", action="store_true", help="do not measure the worker path")
    parser.add_argument("--skip-pipeline", action="store_true",
                        help="do not measure the device input path either: the step alone and evaluation")
    parser.add_argument("--audit", action="store_true",
                        help="count syncs, blocking copies and device ops per step on the meta device, no timing")
    parser.add_argument("--profile-steps", type=int, default=0,
                        help="after timing the step alone, run this many more under torch.profiler and report "
                             "the device's kernels per step, busy and idle time, and the costliest kernels")
    parser.add_argument("--graph-grads", choices=("zeroed", "fresh"), default="zeroed",
                        help="--compile graphs only: the graph zeroes its gradient buffers each step (main.py's "
                             "way) or is captured with none and writes them anew (fused_step.py)")
    return parser


def synthetic_data(n_train, n_test, size, in_chans, num_classes, seed):
    g = torch.Generator().manual_seed(seed)
    def images(n):
        return torch.randint(0, 256, (n, in_chans, size, size), dtype=torch.uint8, generator=g)
    def labels(n):
        return torch.randint(0, num_classes, (n,), generator=g)
    mean, std = [0.5] * in_chans, [0.25] * in_chans
    return Data("synthetic", images(n_train), labels(n_train), images(n_test), labels(n_test),
                [str(i) for i in range(num_classes)], mean, std)


class FixedBatches:
    """The same normalised batch over and over: the step with no input pipeline at all."""

    def __init__(self, x, y, n):
        self.x, self.y, self.n = x, y, n

    def set_epoch(self, epoch):
        pass

    def __len__(self):
        return self.n

    def __iter__(self):
        for _ in range(self.n):
            yield self.x, self.y


class StartClock:
    """Wraps a loader; notes the time when batch number `skip` is handed out, so the first
    batches (compilation, worker start-up) stay out of the measurement."""

    def __init__(self, loader, skip, device):
        self.loader, self.skip, self.device, self.start = loader, skip, device, None

    def set_epoch(self, epoch):
        self.loader.set_epoch(epoch)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if i == self.skip:
                synchronize(self.device)
                self.start = time.perf_counter()
            yield batch


def time_training(net, loader, run, criterion, device, args, batch_size, profile_steps=0):
    """Images per second over args.steps steps of the real training loop, after warm-up; with
    `profile_steps`, that many more steps of the same (compiled, captured) step are profiled into
    time_training.profile (kernel_profile)."""
    clock = StartClock(loader, args.warmup_steps, device)
    steps = args.warmup_steps + args.steps
    if len(loader) < steps:
        raise UserError(f"the synthetic training set holds {len(loader)} batches; --warmup-steps + --steps needs "
                        f"{steps} (raise --train-images)")
    called = time.perf_counter()
    # --compile step | graphs: the whole step as one function (its first calls compile / capture).
    fused = build.make_fused_step(args, run, getattr(net, "_orig_mod", net) if args.compile == "step" else net,
                                  criterion, device, fresh_grads=args.graph_grads == "fresh")

    def epoch(data, n):
        train_one_epoch(net, data, criterion, run.optimizer, run.scheduler, device, 0, amp_dtype=run.amp_dtype,
                        scaler=run.scaler, mixer=run.mixer, max_steps=n, progress=False, log_interval=10**9,
                        fused=fused)

    epoch(clock, steps)
    synchronize(device)
    time_training.warmup_seconds = clock.start - called  # compilation shows up here
    images_per_second = args.steps * batch_size / (time.perf_counter() - clock.start)
    if profile_steps:
        try:  # the profiler is an extra: its failure must not cost the row its figures
            time_training.profile = kernel_profile(lambda: epoch(loader, profile_steps), device, profile_steps)
        except Exception as e:
            time_training.profile = {"error": f"{type(e).__name__}: {e}"}
    return images_per_second


# Trace categories of work on the device: kernels (CUDA graph replays' included), copies, fills.
DEVICE_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")


def kernel_profile(fn, device, steps, top=15):
    """Where `steps` steps (one call of fn) spend the device's time: fn runs under torch.profiler
    (CUDA activity on CUDA) and its trace is summarised by summarize_trace."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    synchronize(device)
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        fn()
        synchronize(device)
        wall = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            trace = json.load(f)
    events = trace.get("traceEvents", []) if isinstance(trace, dict) else trace
    return summarize_trace(events, steps, wall, top)


def summarize_trace(events, steps, wall_seconds, top=15):
    """Per step, from a Chrome trace's events: the device's kernels, copies and fills
    (DEVICE_CATEGORIES), the time some of them ran (busy: the union of their intervals, so
    concurrent kernels count once), the device timeline's span from the first start to the last
    end and its idle part (span - busy: where the device waited for the host or between replayed
    kernels), the profiled wall time (the profiler's overhead included), and the `top` kernels
    by total time: [name, calls per step, microseconds per step, share of the busy time].
    No device events (the CPU): the counts are 0 and there is no span."""
    work = [e for e in events if e.get("ph") == "X" and e.get("cat") in DEVICE_CATEGORIES]
    out = {"profiled_steps": steps, "wall_us_per_step": wall_seconds * 1e6 / steps,
           "device_events_per_step": len(work) / steps}
    if not work:
        return out
    intervals = sorted((float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in work)
    busy, (run_start, run_end) = 0.0, intervals[0]
    for start, end in intervals[1:]:
        if start > run_end:
            busy += run_end - run_start
            run_start, run_end = start, end
        else:
            run_end = max(run_end, end)
    busy += run_end - run_start
    span = run_end - intervals[0][0]  # the last merged run ends where the last event does
    by_name = {}
    for e in work:
        calls, total = by_name.get(e["name"], (0, 0.0))
        by_name[e["name"]] = (calls + 1, total + float(e["dur"]))
    ranked = sorted(by_name.items(), key=lambda kv: -kv[1][1])[:top]
    out.update({"busy_us_per_step": busy / steps, "span_us_per_step": span / steps,
                "idle_us_per_step": (span - busy) / steps, "distinct_kernels": len(by_name),
                "top_kernels": [[name[:160], calls / steps, total / steps, total / busy]
                                for name, (calls, total) in ranked]})
    return out


def count_flops(model, x, y, criterion):
    """(training FLOPs, forward FLOPs) per image, counted in float32 on a batch of 2."""
    model.train()
    # The math backend writes attention as matrix products, which the counter sees on every
    # device (it has no formula for the CPU's fused attention kernel).
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        criterion(model(x), y).backward()
    train = counter.get_total_flops()
    model.zero_grad(set_to_none=True)
    with sdpa_kernel(SDPBackend.MATH), torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return train / x.shape[0], counter.get_total_flops() / x.shape[0]


def seconds_per_call(fn, device, reps, warmup=1):
    """Wall seconds per call of fn() after `warmup` calls, the device synchronised on both sides
    of the clock (its queued work counts, the warm-up's does not)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / reps


def matmul_peak(device):
    """TFLOP/s of a large square matrix product: bf16 on CUDA, float32 elsewhere."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (1024, torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    seconds = seconds_per_call(lambda: a @ b, device, reps=20 if device.type == "cuda" else 5, warmup=3)
    return 2 * n ** 3 / seconds / 1e12, str(dtype).replace("torch.", "")


def peak_memory_gb(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # host RSS, in kB on Linux


@contextlib.contextmanager
def _capturable_on_meta():
    adam = importlib.import_module("torch.optim.adam")  # the module (torch.optim.adam is a function)
    real = adam._get_capturable_supported_devices
    adam._get_capturable_supported_devices = lambda supports_xla=True: [*real(supports_xla), "meta"]
    try:
        yield
    finally:
        adam._get_capturable_supported_devices = real


def audit_device_path(args):
    """Per-step counts of the device path on the meta device: the augmentation of one batch,
    the training step alone, and the whole loop per step (a 4-step epoch minus a 2-step one,
    halved, so the per-epoch work cancels out)."""
    build.resolve_args(args)
    meta = torch.device("meta")
    args.device_type, args.input_path, args.input_size = "meta", "device", args.image_size
    num_classes = args.num_classes = args.num_classes or 10
    data = synthetic_data(args.batch_size * 6, 16, args.image_size, 3, num_classes, args.seed)
    criterion = CRITERIONS.build(args.criterion, num_classes, args.label_smoothing, args.smoothing)
    model = build_model(args.model_name, num_classes, args.image_size, 3, **build.model_options(args)).to(meta)
    run = build.build_training(args, data, model, meta)
    loader = run.train_loader
    loader.set_epoch(0)
    batches = iter(loader)
    next(batches)  # the first batch also draws the epoch's permutation
    with audit() as aug:
        x, y = next(batches)
    kwargs = dict(amp_dtype=run.amp_dtype, scaler=run.scaler, mixer=run.mixer, grad_clip=args.grad_clip, ema=run.ema)
    for _ in range(2):  # the second call: the optimizer creates its state in the first
        with audit() as step:
            train_step(model, x, y, criterion, run.optimizer, run.scheduler, meta, **kwargs)

    def epoch(steps):
        with audit() as c:
            train_one_epoch(model, loader, criterion, run.optimizer, run.scheduler, meta, 0, max_steps=steps,
                            progress=False, log_interval=10**9, **kwargs)
        return c.counts()

    two, four = epoch(2), epoch(4)
    loop = {k: (four[k] - two[k]) / 2 for k in ("ops", "syncs", "blocking_copies")}
    # The body that --compile step compiles and --compile graphs captures, run as is, with the
    # capturable Adam/AdamW those modes get on CUDA (PyTorch's device check let through for meta).
    with _capturable_on_meta():
        optimizer = build.make_optimizer(model, args, capturable=args.optimizer in ("adam", "adamw"))
    fused = FusedStep(model, criterion, optimizer, build.make_scheduler(optimizer, args, run.steps_per_epoch), meta,
                      mode="eager",
                      total_steps=args.max_epochs * run.steps_per_epoch, amp_dtype=run.amp_dtype, mixer=run.mixer,
                      grad_clip=args.grad_clip, ema=run.ema)
    for _ in range(2):
        with _capturable_on_meta(), audit() as fused_step:
            fused(x, y)
    return {"batch_size": args.batch_size, "policy": args.policy, "model": args.model_name,
            "aug_ops_per_batch": aug.ops, "aug_syncs_per_batch": aug.syncs,
            "aug_blocking_copies_per_batch": aug.blocking_copies, "step_ops": step.ops,
            "step_syncs": step.syncs, "step_blocking_copies": step.blocking_copies,
            "syncs_per_step": loop["syncs"], "blocking_copies_per_step": loop["blocking_copies"],
            "fused_step_ops": fused_step.ops, "fused_step_syncs": fused_step.syncs,
            "fused_step_blocking_copies": fused_step.blocking_copies,
            "ops_per_step": loop["ops"], "torch": torch.__version__,
            "note": "meta device: the optimizer runs its single-tensor form (the fused CUDA one launches fewer ops)"}


def bench(args):
    build.resolve_args(args)
    device = pick_device(args.device)
    args.device_type = device.type
    args.input_size = args.image_size
    torch.backends.cudnn.benchmark = not args.off_benchmark
    seed_everything(args.seed)
    steps = args.warmup_steps + args.steps
    n_train = args.train_images or max(steps * args.batch_size, 50000 if device.type == "cuda" else 0)
    in_chans = 3
    num_classes = args.num_classes or 10
    args.num_classes = num_classes
    # A CIFAR-sized test set, so the eval figure is not the first few batches' launch rate.
    data = synthetic_data(n_train, 10000 if device.type == "cuda" else 1024, args.image_size, in_chans, num_classes,
                          args.seed)
    criterion = CRITERIONS.build(args.criterion, num_classes, args.label_smoothing, args.smoothing)

    def fresh(input_path):
        """A model with its loaders, optimizer and schedule, for the given input path."""
        seed_everything(args.seed)
        args.input_path = input_path
        model = build_model(args.model_name, num_classes, args.image_size, in_chans, **build.model_options(args))
        run = build.build_training(args, data, model, device)
        return model, run, build.wrap_model(model, args, device)

    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
               "model": args.model_name, "batch_size": args.batch_size, "policy": args.policy,
               "precision": str(build.amp_setup(args, device)[0]), "compile": args.compile, "steps": args.steps,
               "torch": torch.__version__}

    model, run, net = fresh("device")
    results["parameters"] = sum(p.numel() for p in model.parameters())
    x2 = torch.randn(2, in_chans, args.image_size, args.image_size, device=device)
    train_flops, fwd_flops = count_flops(model, x2, torch.zeros(2, dtype=torch.long, device=device), criterion)
    results["train_gflop_per_image"] = train_flops / 1e9
    results["eval_gflop_per_image"] = fwd_flops / 1e9

    # 1. The step alone.
    fixed_x = torch.randn(args.batch_size, in_chans, args.image_size, args.image_size, device=device)
    fixed_y = torch.randint(0, num_classes, (args.batch_size,), device=device)
    saved_mixer, run.mixer = run.mixer, None
    results["train_images_per_second"] = time_training(
        net, FixedBatches(fixed_x, fixed_y, max(steps, args.profile_steps)), run, criterion, device, args,
        args.batch_size, profile_steps=args.profile_steps)
    results["train_warmup_seconds"] = time_training.warmup_seconds
    if args.profile_steps:
        results["step_profile"] = time_training.profile
    run.mixer = saved_mixer
    # 2. The device input path, same model and compiled graphs.
    if not args.skip_pipeline:
        results["pipeline_images_per_second"] = time_training(
            net, run.train_loader, run, criterion, device, args, args.batch_size)
    # 3. The worker input path.
    if not args.skip_dataloader:
        _, wrun, wnet = fresh("workers")
        results["dataloader_workers"] = args.workers
        results["dataloader_images_per_second"] = time_training(
            wnet, wrun.train_loader, wrun, criterion, device, args, args.batch_size)
    # 4. Evaluation.
    evaluate(net, run.test_loader, criterion, device, amp_dtype=run.amp_dtype, max_steps=1, progress=False)
    results["eval_images_per_second"] = evaluate(net, run.test_loader, criterion, device, amp_dtype=run.amp_dtype,
                                                 progress=False)["eval_images_per_second"]

    peak, peak_dtype = matmul_peak(device)
    results["matmul_peak_tflops"], results["matmul_peak_dtype"] = peak, peak_dtype
    results["tflops"] = results["train_images_per_second"] * train_flops / 1e12
    results["share_of_peak"] = results["tflops"] / peak
    results["peak_memory_gb"] = peak_memory_gb(device)
    try:  # how many graphs torch.compile built (more than one per module means recompiles)
        from torch._dynamo.utils import counters
        results["compiled_graphs"] = int(counters["stats"]["unique_graphs"])
    except Exception:
        pass
    if "pipeline_images_per_second" in results:
        results["pipeline_tflops"] = results["pipeline_images_per_second"] * train_flops / 1e12
        results["pipeline_vs_step"] = results["pipeline_images_per_second"] / results["train_images_per_second"]
        if "dataloader_images_per_second" in results:
            results["pipeline_vs_dataloader"] = (results["pipeline_images_per_second"]
                                                 / results["dataloader_images_per_second"])
    return results


def print_table(r):
    rows = [
        ("device", r["device"]), ("model", f"{r['model']} ({r['parameters'] / 1e6:.2f}M params)"),
        ("batch size / policy / precision", f"{r['batch_size']} / {r['policy']} / {r['precision']}"),
        ("train GFLOP per image (counted)", f"{r['train_gflop_per_image']:.3f}"),
        ("train img/s, data on device, no aug", f"{r['train_images_per_second']:,.0f}"),
    ]
    if "pipeline_images_per_second" in r:
        rows.append(("train img/s, device pipeline",
                     f"{r['pipeline_images_per_second']:,.0f}  ({r['pipeline_vs_step']:.2f}x of the step alone)"))
    if "dataloader_images_per_second" in r:
        versus = f"  (device pipeline {r['pipeline_vs_dataloader']:.2f}x)" if "pipeline_vs_dataloader" in r else ""
        rows.append((f"train img/s, DataLoader ({r['dataloader_workers']} workers)",
                     f"{r['dataloader_images_per_second']:,.0f}{versus}"))
    rows += [
        ("eval img/s", f"{r['eval_images_per_second']:,.0f}"),
        ("achieved TFLOP/s (step alone)", f"{r['tflops']:.3g} = {100 * r['share_of_peak']:.1f}% of "
                                          f"{r['matmul_peak_tflops']:.3g} ({r['matmul_peak_dtype']} matmul, measured)"),
        ("peak memory GB" + (" (host RSS)" if not r["device"].startswith(("NVIDIA", "cuda")) and "cuda" not in r["device"] else ""),
         f"{r['peak_memory_gb']:.2f}"),
    ]
    prof = r.get("step_profile")
    if prof and "busy_us_per_step" in prof:
        rows.append((f"device per step ({prof['profiled_steps']} profiled)",
                     f"{prof['device_events_per_step']:,.0f} kernels, busy {prof['busy_us_per_step']:,.0f} us, "
                     f"idle {prof['idle_us_per_step']:,.0f} us"))
        rows += [(f"  {name[:60]}", f"{us:,.1f} us ({calls:g} a step, {100 * share:.1f}%)")
                 for name, calls, us, share in prof["top_kernels"][:5]]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


def main(args):
    if args.steps <= 0 or args.warmup_steps < 0 or args.profile_steps < 0:
        raise UserError(f"--steps must be positive and --warmup-steps and --profile-steps not negative, got "
                        f"{args.steps}, {args.warmup_steps} and {args.profile_steps}")
    if args.graph_grads == "fresh" and args.compile != "graphs":
        raise UserError(f"--graph-grads fresh is a way of capturing the step: it needs --compile graphs, "
                        f"not --compile {args.compile}")
    results = audit_device_path(args) if args.audit else bench(args)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    if args.audit:
        width = max(map(len, results))
        for k, v in results.items():
            print(f"{k:<{width}}  {v}")
    else:
        print_table(results)
    return results


if __name__ == "__main__":
    try:
        main(get_args_parser().parse_args())
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
