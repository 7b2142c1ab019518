"""Checkpoints and the run folder: what is written, when, and how a run takes it back.

Every write is atomic (utils.atomic_save), so a kill at any moment leaves the previous file
or the new one. The checkpoint's save and its load for --resume stand side by side here.
"""
import contextlib
import os
import shutil
import time

import torch

from data import check_fingerprint
from utils import TEMP_PREFIX, UserError, atomic_save, load_checkpoint, rng_state, set_rng_state

CHECKPOINT = "checkpoint.pt"
# Flags that may change between a run and its --resume without changing what it computes.
RESUMABLE_CHANGES = {"resume", "device", "workers", "api_key", "comet_offline", "progress", "log_interval", "save_every",
                     "eval_batch_size", "output_dir", "output_dir_given", "compile", "project_name", "data_dir",
                     "off_benchmark", "input_size", "tta", "run_classes", "run_fingerprint", "eval_every"}


def load_weights(model, path):
    state = load_checkpoint(path)
    state = state.get("model", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise UserError(f"{path} holds no state dict")
    state = {k.removeprefix("_orig_mod.").removeprefix("module."): v for k, v in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"{path} does not fit the model: {str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else e}")


def save_checkpoint(path, *, model, optimizer, scheduler, scaler, ema, epoch, history, args, data_fingerprint):
    """Everything --resume needs to continue as if never stopped: weights, optimizer, schedule,
    scaler, EMA, the RNG states, the metrics so far, the flags and the data's fingerprint."""
    optimizer_state = optimizer.state_dict()
    for group, lr in zip(optimizer_state["param_groups"], getattr(scheduler, "_last_lr", [])):
        if torch.is_tensor(group.get("lr")):  # a FusedStep's rates are 0-dim device tensors: store the
            group["lr"] = lr                  # scheduler's floats, which every step mode resumes from
    atomic_save({"model": model.state_dict(), "optimizer": optimizer_state, "scheduler": scheduler.state_dict(),
                 "scaler": scaler.state_dict() if scaler else None, "ema": ema.state_dict() if ema is not None else None,
                 "epoch": epoch, "history": history, "rng": rng_state(), "args": vars(args), "data": data_fingerprint},
                path)


def load_for_resume(path, args, data_fingerprint, *, model, optimizer, scheduler, scaler, ema):
    """The counterpart of save_checkpoint: checks that the run and its data are the same, puts
    every state back, and returns (first epoch to train, the metrics so far)."""
    ckpt = _checked(args, path, data_fingerprint)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    if ema is not None and ckpt.get("ema"):
        ema.load_state_dict(ckpt["ema"])
    set_rng_state(ckpt["rng"])
    return ckpt["epoch"] + 1, ckpt["history"]


def _checked(args, path, data_fingerprint):
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "args" not in ckpt:
        raise UserError(f"{path} is not a ViT-CIFAR training checkpoint")
    check_fingerprint(ckpt.get("data"), data_fingerprint, "--resume")  # older checkpoints have none
    saved = ckpt["args"]
    differs = sorted(k for k, v in vars(args).items()
                     if k not in RESUMABLE_CHANGES and k in saved and saved[k] != v)
    if differs:
        raise UserError("--resume: these flags differ from the checkpoint's run: "
                        + ", ".join(f"--{k.replace('_', '-')} ({saved[k]} there, {getattr(args, k)} here)" for k in differs))
    return ckpt


class Interrupted(UserError):
    code = 130


class CheckpointPolicy:
    """When to write the checkpoint: every `every` epochs and on the last one, or, with every=0
    (the default), whenever the time since the last write is at least 100 times what that write
    took, so checkpoints cost at most ~1% of the run however fast the epochs are."""

    def __init__(self, every):
        self.every, self.last_write, self.write_seconds = every, None, 0.0

    def due(self, epoch, last):
        if last or self.last_write is None:
            return True
        if self.every > 0:
            return (epoch + 1) % self.every == 0
        return time.perf_counter() - self.last_write >= 100 * self.write_seconds

    @contextlib.contextmanager
    def timed(self):
        start = time.perf_counter()
        yield
        self.last_write = time.perf_counter()
        self.write_seconds = self.last_write - start


@contextlib.contextmanager
def claim_output_dir(out_dir, enabled=True):
    """The run's folder, locked against a second run, and left as it was found if the run fails
    before its first checkpoint (no stray config.json or augmented.png from a failed start).

    The lock is a file holding the owner's pid; a lock whose process is gone is taken over.
    """
    existed = os.path.isdir(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    if not enabled:
        yield
        return
    before = set(os.listdir(out_dir))
    for name in before:  # half-written files of a run killed mid-write
        if name.startswith(TEMP_PREFIX):
            os.unlink(os.path.join(out_dir, name))
    lock = os.path.join(out_dir, ".lock")
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            pid = int(open(lock).read().strip())  # empty: a run killed before it wrote its pid
            os.kill(pid, 0)
            alive = pid > 0 and pid != os.getpid()
        except (ValueError, ProcessLookupError):
            alive = False
        except PermissionError:
            alive = True
        if alive:
            raise UserError(f"{out_dir} is in use by another run (pid {pid}); wait for it or choose another --output-dir")
        os.unlink(lock)  # a stale lock of a process that died
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    try:
        yield
    except BaseException:
        if not os.path.exists(os.path.join(out_dir, CHECKPOINT)):
            for name in set(os.listdir(out_dir)) - before - {".lock"}:
                path = os.path.join(out_dir, name)
                shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
        raise
    finally:
        if os.path.exists(lock):
            os.unlink(lock)
        if not existed and not os.listdir(out_dir):
            os.rmdir(out_dir)


