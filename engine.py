"""The training step, one epoch of training, and evaluation. Each epoch function returns a
dict of metrics.

The step never waits for the device: loss sums and correct counts accumulate in device
tensors and are read only at progress-bar refreshes and at the end of the epoch.
"""
import contextlib
import math
import time

import torch
import torch.distributed as dist
from tqdm import tqdm

from criterions import mixed_correct, mixed_loss


class NonFiniteLoss(Exception):
    def __init__(self, epoch, step):
        kept = "the last good checkpoint is kept" if epoch > 1 else "no checkpoint was written yet"
        super().__init__(f"non-finite loss at epoch {epoch}, step {step}; {kept} "
                         f"(lower --lr, add --grad-clip, or pass --skip-nonfinite to skip such steps)")


def autocast(device, dtype):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _sum_over_ranks(*values):
    """Sums of per-rank totals, on every rank (a no-op without torch.distributed)."""
    t = torch.stack([torch.as_tensor(v, dtype=torch.float64).to(values[0].device) for v in values])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


def _backward(loss, scaler):
    (scaler.scale(loss) if scaler is not None else loss).backward()


def train_one_epoch(model, loader, criterion, optimizer, scheduler, device, epoch, *, amp_dtype=None,
                    scaler=None, mixer=None, grad_clip=0.0, ema=None, skip_nonfinite=False,
                    max_steps=None, log_interval=50, progress=True):
    """One pass over `loader`. The scheduler steps once per optimizer step.

    A SAM optimizer (optim.SAM) gets a closure that recomputes the loss at the perturbed weights.
    """
    model.train()
    loader.set_epoch(epoch)
    n_steps = len(loader) if max_steps is None else min(len(loader), max_steps)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    seen = 0
    first_bad = torch.full((), -1, device=device, dtype=torch.long)
    skipped = 0
    start = time.perf_counter()
    bar = tqdm(total=n_steps, desc=f"train {epoch}", disable=not progress, leave=False, dynamic_ncols=True)
    for step, (x, y) in enumerate(loader):
        if step >= n_steps:
            break
        y_b, lam = None, 1.0
        if mixer is not None:
            x, y, y_b, lam = mixer(x, y, loader.generator)
        with autocast(device, amp_dtype):
            logits = model(x)
            loss = mixed_loss(criterion, logits, y, y_b, lam)
        finite = torch.isfinite(loss.detach())
        if skip_nonfinite and not finite:  # a host sync per step, only when asked for
            optimizer.zero_grad(set_to_none=True)
            skipped += 1
            scheduler.step()
            bar.update()
            continue
        _backward(loss, scaler)
        if getattr(optimizer, "needs_closure", False):
            def closure():
                with autocast(device, amp_dtype):
                    second = mixed_loss(criterion, model(x), y, y_b, lam)
                _backward(second, scaler)
                return second
        else:
            closure = None
        if scaler is not None:
            scaler.unscale_(optimizer)
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if scaler is not None:
            scaler.step(optimizer, closure) if closure is not None else scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step(closure) if closure is not None else optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        if ema is not None:
            ema.update_parameters(model)

        loss_sum += loss.detach().float() * y.shape[0]
        correct += mixed_correct(logits.detach(), y, y_b, lam)
        first_bad = torch.where((first_bad < 0) & ~finite, torch.full_like(first_bad, step), first_bad)
        seen += y.shape[0]
        bar.update()
        if (step + 1) % log_interval == 0 or step + 1 == n_steps:
            if int(first_bad) >= 0 and scaler is None:
                bar.close()
                raise NonFiniteLoss(epoch + 1, int(first_bad) + 1)  # counted from 1, as the logs count
            if progress:
                bar.set_postfix(loss=f"{float(loss_sum) / seen:.4f}", acc=f"{float(correct) / seen:.4f}",
                                lr=f"{optimizer.param_groups[0]['lr']:.2e}")
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    loss_sum, correct, seen = _sum_over_ranks(loss_sum, correct, seen)
    seen = max(seen, 1)
    return {
        "train_loss": loss_sum / seen,
        "train_acc": correct / seen,
        "lr": optimizer.param_groups[0]["lr"],
        "train_seconds": seconds,
        "train_images_per_second": seen / seconds if seconds > 0 else math.nan,
        "skipped_steps": skipped,
        "train_images": int(seen),
    }


@torch.no_grad()
def evaluate(model, loader, criterion, device, *, amp_dtype=None, max_steps=None, progress=True,
             return_logits=False):
    """Test loss and accuracy (top-1 and top-5). With return_logits, also the logits and labels."""
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    correct5 = torch.zeros((), device=device)
    seen = 0
    all_logits, all_labels = [], []
    start = time.perf_counter()
    n_steps = len(loader) if max_steps is None else min(len(loader), max_steps)
    bar = tqdm(total=n_steps, desc="eval", disable=not progress, leave=False, dynamic_ncols=True)
    for step, (x, y) in enumerate(loader):
        if step >= n_steps:
            break
        with autocast(device, amp_dtype):
            logits = model(x)
        logits = logits.float()
        loss_sum += criterion(logits, y).float() * y.shape[0]
        correct += (logits.argmax(-1) == y).sum()
        k = min(5, logits.shape[-1])
        correct5 += (logits.topk(k, dim=-1).indices == y[:, None]).any(dim=-1).sum()
        seen += y.shape[0]
        bar.update()
        if progress:  # a few large batches: reading the running numbers each time costs little
            bar.set_postfix(loss=f"{float(loss_sum) / seen:.4f}", acc=f"{float(correct) / seen:.4f}")
        if return_logits:
            all_logits.append(logits.cpu())
            all_labels.append(y.cpu())
    bar.close()
    seconds = time.perf_counter() - start
    loss_sum, correct, correct5, seen = _sum_over_ranks(loss_sum, correct, correct5, seen)
    seen = max(seen, 1)
    metrics = {
        "test_loss": loss_sum / seen,
        "test_acc": correct / seen,
        "test_top5": correct5 / seen,
        "eval_seconds": seconds,
        "eval_images_per_second": seen / seconds if seconds > 0 else math.nan,
        "test_images": int(seen),
    }
    if return_logits:
        return metrics, torch.cat(all_logits), torch.cat(all_labels)
    return metrics
