"""fused_step.py: the training step as one function of device tensors (--compile step / graphs).

Its body must train exactly what engine.train_step trains: the same mixing, loss, clipping,
optimizer update, schedule, EMA and metric sums, step for step, and leave a checkpoint that an
eager run resumes from as if it had never stopped. On the CPU the body runs as is ("eager") and
compiled ("step", through main.py); CUDA graphs need a GPU (tools/gpu_check.sh). The audit of
its syncs is in test_audit.py."""
import csv

import pytest
import torch

import bench
import build
import main as cli
from checkpoint import save_checkpoint
from criterions import CRITERIONS
from engine import accumulate, train_step
from fused_step import FusedStep, lr_table
from models import build_model
from conftest import TINY, make_image_folder

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS_PER_EPOCH = 3


def _build(*flags, seed=0, device="cpu", compile="off"):
    """A tiny run built by the build layer from the flags: (args, run, criterion, batches).
    `compile` only picks the optimizer the build layer makes for that mode (on CUDA, "graphs"
    gets the capturable fused Adam); the model is never compiled here."""
    args = cli.get_args_parser().parse_args(["--num-layers", "1", "--hidden", "32", "--mlp-hidden", "32", "--head", "2",
                                             "--batch-size", "8", "--max-epochs", "3", "--warmup-epoch", "1",
                                             "--input-path", "device", "--device", device, "--compile", compile,
                                             "--precision", "32", *flags])
    build.resolve_args(args)
    args.device_type, args.input_size, args.num_classes = device, args.image_size, 10
    data = bench.synthetic_data(8 * STEPS_PER_EPOCH, 8, 32, 3, 10, seed)
    torch.manual_seed(seed)
    model = build_model(args.model_name, 10, 32, 3, **build.model_options(args))
    run = build.build_training(args, data, model, torch.device(device))
    assert run.steps_per_epoch == STEPS_PER_EPOCH
    criterion = CRITERIONS.build(args.criterion, 10, args.label_smoothing, args.smoothing)
    run.train_loader.set_epoch(0)
    batches = [b for b in run.train_loader]
    return args, run, criterion, batches


def _eager(run, criterion, batches, args):
    device = torch.device(args.device_type)
    sums, first_bad = torch.zeros(2, device=device), torch.full((), -1, dtype=torch.long, device=device)
    for i, (x, y) in enumerate(batches):
        out = train_step(run.model, x, y, criterion, run.optimizer, run.scheduler, device,
                         mixer=run.mixer, grad_clip=args.grad_clip, ema=run.ema)
        accumulate(sums, first_bad, i, *out, y.shape[0])
    return sums


def _fused(args, run, criterion, mode="eager", fresh_grads=False):
    return FusedStep(run.model, criterion, run.optimizer, run.scheduler, torch.device(args.device_type), mode=mode,
                     total_steps=args.max_epochs * run.steps_per_epoch, mixer=run.mixer, grad_clip=args.grad_clip,
                     ema=run.ema, fresh_grads=fresh_grads)


def _assert_close_states(a, b, rtol=1e-4, atol=2e-5):
    """Equal up to float rounding. Adam with a tensor lr rounds its update differently from Adam
    with a float (1 ulp in the first step), and training carries that to ~2e-6 in six steps;
    training a step at the wrong rate moves the weights by ~1e-4 (checked by hand)."""
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=rtol, atol=atol), (k, (a[k] - b[k]).abs().max())


FLAGS = [[], ["--lr-per-step", "--warmup-epoch", "0"],
         ["--mixup", "--cutmix", "--mix-choice", "random", "--ema-decay", "0.9", "--grad-clip", "0.5",
          "--label-smoothing", "--dropout", "0.1"],
         ["--optimizer", "adamw", "--wd-exclude-norm-bias", "--scheduler", "multistep", "--milestones", "1", "2"]]


def check_fused_trains_what_train_step_trains(flags, device="cpu", mode="eager", fresh_grads=False):
    """Six steps over two epochs (the schedule changes in between), from the same seed: weights,
    EMA, Adam's moments, metric sums and the scheduler's count and rates as the eager loop's.
    The eager run gets the optimizer the build layer makes for --compile off, the fused one that
    of its own mode (on CUDA: fused Adam, capturable under "graphs"). tests/test_cuda.py runs
    this with mode "graphs" on a GPU, with each way of keeping the graph's gradients."""
    args, run, criterion, batches = _build(*flags, device=device)
    torch.manual_seed(1)
    sums = _eager(run, criterion, batches * 2, args)
    want = {"model": run.model.state_dict(), "ema": run.ema.state_dict() if run.ema else {},
            "exp_avg": {str(i): s["exp_avg"] for i, s in enumerate(run.optimizer.state.values())}}
    want_sched = (run.scheduler.last_epoch, run.scheduler.get_last_lr())

    # The eager run's batches: under a compile mode the build's loader compiles its augmentation,
    # whose draws are test_audit's subject, not this one's.
    args, run, criterion, _ = _build(*flags, device=device, compile="off" if mode == "eager" else mode)
    fused = _fused(args, run, criterion, mode=mode, fresh_grads=fresh_grads)
    torch.manual_seed(1)
    got_sums = torch.zeros(2, device=device)
    for _ in range(2):  # two epochs: the sums are per epoch
        fused.begin_epoch()
        for x, y in batches:
            fused(x, y)
        fused.end_epoch()
        got_sums += fused.sums
    got = {"model": run.model.state_dict(), "ema": run.ema.state_dict() if run.ema else {},
           "exp_avg": {str(i): s["exp_avg"] for i, s in enumerate(run.optimizer.state.values())}}
    for key in want:
        _assert_close_states(want[key], got[key])
    assert torch.allclose(sums, got_sums, rtol=1e-5), (sums, got_sums)
    assert (run.scheduler.last_epoch, run.scheduler.get_last_lr()) == want_sched
    # The optimizer trains the next step at the rate the eager schedule would give it (float32).
    assert [float(g["lr"]) for g in run.optimizer.param_groups] == pytest.approx(want_sched[1], rel=1e-7)


@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: "-".join(a.strip("-") for a in f[:3]) or "seed-recipe")
def test_the_fused_body_trains_what_train_step_trains(flags):
    check_fused_trains_what_train_step_trains(flags)


def test_train_step_leaves_the_gradients_as_its_capture_mode_says():
    # Eager: set to None (the next backward allocates); a graph that zeroes: zeroed in place, the
    # same tensors; a graph captured without gradients: left as the backward wrote them.
    args, run, criterion, batches = _build()
    x, y = batches[0]
    left = {}
    for captured in (None, "zeroed", "fresh"):
        train_step(run.model, x, y, criterion, run.optimizer, run.scheduler, torch.device("cpu"), captured=captured)
        left[captured] = [None if p.grad is None else (id(p.grad), p.grad.clone()) for p in run.model.parameters()]
    assert all(g is None for g in left[None])
    assert all(g is not None and not g[1].any() for g in left["zeroed"])
    assert [g[0] for g in left["fresh"]] == [g[0] for g in left["zeroed"]]  # the same buffers, added into
    assert all(f[1].abs().sum() > 0 for f in left["fresh"])  # what the backward wrote is still there
    with pytest.raises(ValueError, match="needs mode 'graphs'"):
        _fused(args, run, criterion, mode="step", fresh_grads=True)


def test_the_rate_table_is_the_schedules():
    """lr_table is what stepping the scheduler gives, step by step, for every group."""
    args, run, _, _ = _build("--optimizer", "adamw", "--wd-exclude-norm-bias", "--lr-per-step")
    table = lr_table(run.scheduler, args.max_epochs * run.steps_per_epoch)
    stepped = []
    for _ in range(len(table)):
        stepped.append([g["lr"] for g in run.optimizer.param_groups])
        run.scheduler.step()
    assert table.tolist() == stepped and table.shape[1] == 2


def test_a_fused_runs_checkpoint_resumes_eagerly_as_if_never_stopped(tmp_path):
    """Three fused steps, a checkpoint, three eager steps from it == six eager steps."""
    args, run, criterion, batches = _build("--ema-decay", "0.9")
    torch.manual_seed(1)
    _eager(run, criterion, batches * 2, args)
    want = run.model.state_dict()

    args, run, criterion, batches = _build("--ema-decay", "0.9")
    fused = _fused(args, run, criterion)
    torch.manual_seed(1)
    fused.begin_epoch()
    for x, y in batches:
        fused(x, y)
    fused.end_epoch()
    rng = torch.get_rng_state()
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, model=run.model, optimizer=run.optimizer, scheduler=run.scheduler, scaler=None, ema=run.ema,
                    epoch=0, history=[], args=args, data_fingerprint=None)
    saved = torch.load(path, weights_only=False)
    assert all(isinstance(g["lr"], float) for g in saved["optimizer"]["param_groups"])

    args, run, criterion, batches = _build("--ema-decay", "0.9")
    run.model.load_state_dict(saved["model"])
    run.optimizer.load_state_dict(saved["optimizer"])
    run.scheduler.load_state_dict(saved["scheduler"])
    run.ema.load_state_dict(saved["ema"])
    torch.set_rng_state(rng)
    for x, y in batches:
        train_step(run.model, x, y, criterion, run.optimizer, run.scheduler, torch.device("cpu"), ema=run.ema)
    _assert_close_states(want, run.model.state_dict())


def test_graphs_need_a_cuda_device():
    args, run, criterion, _ = _build()
    with pytest.raises(ValueError, match="CUDA"):
        _fused(args, run, criterion, mode="graphs")


def check_main_matches_eager(tmp_path, mode, device="cpu", tol=1e-5):
    """--compile `mode` against --compile off through main.py, three epochs with label smoothing,
    mixing and EMA: the same log and weights up to float rounding, the same learning rates
    exactly. (No policy: a compiled policy's equality with eager is
    test_autoaugment_meta_and_input's, and compiling one here would double this test's time.)"""
    data = make_image_folder(str(tmp_path / "data"), n_train=8, n_test=4)
    common = ["--dataset", "folder", "--data-dir", data, "--max-epochs", 3, *TINY, "--warmup-epoch", 1,
              "--input-path", "device", "--label-smoothing", "--mixup", "--ema-decay", "0.9", "--device", device,
              "--precision", "32"]
    for m in ("off", mode):
        cli.main(cli.get_args_parser().parse_args([str(a) for a in
                                                   [*common, "--output-dir", tmp_path / m, "--compile", m]]))
    rows = {}
    for m in ("off", mode):
        with open(tmp_path / m / "metrics.csv") as f:
            rows[m] = list(csv.DictReader(f))
    assert [r["lr"] for r in rows["off"]] == [r["lr"] for r in rows[mode]]
    for a, b in zip(rows["off"], rows[mode]):
        for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=tol), (key, a[key], b[key])
    _assert_close_states(torch.load(tmp_path / "off" / "model.pth"), torch.load(tmp_path / mode / "model.pth"),
                         rtol=1e-4, atol=tol / 10)


@pytest.mark.slow
def test_compile_step_through_main_matches_eager(tmp_path):
    check_main_matches_eager(tmp_path, "step")
