"""The training step, one epoch of training, and evaluation. Each epoch function returns a
dict of metrics.

The step never waits for the device: loss sums and correct counts accumulate in device
tensors and are read only at progress-bar refreshes and at the end of the epoch. Clocks are
read only after a device synchronisation, so the img/s figures are the device's, not the
rate at which the host queued work.
"""
import contextlib
import copy
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


def autocast(device, dtype, cache=True):
    """Autocast to `dtype` (None: off). cache=False for a CUDA graph capture: autocast's cache of
    cast weights must not outlive the captured region."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=cache)


def _sum_over_ranks(*values):
    """Sums of per-rank totals, on every rank (a no-op without torch.distributed)."""
    t = torch.stack([torch.as_tensor(v, dtype=torch.float64).to(values[0].device) for v in values])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


def _backward(loss, scaler):
    (scaler.scale(loss) if scaler is not None else loss).backward()


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class EMA(torch.nn.Module):
    """Exponential moving average of a model's weights and buffers (batch-norm statistics too),
    updated without reading anything back to the host.

    The same average as torch.optim.swa_utils.AveragedModel(get_ema_multi_avg_fn(decay),
    use_buffers=True): the first update copies the model, later ones move decay of the way
    towards it. AveragedModel branches on `n_averaged == 0` in Python, a host read per step;
    here that choice is a weight tensor (1 on the first update), so the step never waits.
    State dicts are interchangeable with AveragedModel's ("module.*" and "n_averaged").
    """

    def __init__(self, model, decay):
        super().__init__()
        self.module = copy.deepcopy(model)
        self.decay = decay
        self.register_buffer("n_averaged", torch.tensor(0, dtype=torch.long, device=next(model.parameters()).device))

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    @torch.no_grad()
    def update_parameters(self, model):
        pairs = list(zip([*self.module.parameters(), *self.module.buffers()], [*model.parameters(), *model.buffers()]))
        floats = [(a, b.detach()) for a, b in pairs if a.is_floating_point()]
        first = self.n_averaged == 0
        if floats:
            ema, cur = map(list, zip(*floats))
            weight = torch.where(first, 1.0, 1.0 - self.decay).to(ema[0].dtype)
            delta = torch._foreach_sub(cur, ema)
            torch._foreach_mul_(delta, weight)
            torch._foreach_add_(ema, delta)
        for a, b in pairs:  # integer buffers (num_batches_tracked), as AveragedModel averages them
            if not a.is_floating_point():
                a.copy_(torch.where(first, b, (a * self.decay + b * (1 - self.decay)).to(a.dtype)))
        self.n_averaged += 1


def train_step(model, x, y, criterion, optimizer, scheduler, device, *, amp_dtype=None, scaler=None, mixer=None,
               grad_clip=0.0, ema=None, skip_nonfinite=False, captured=None):
    """One optimizer step on a batch: mix, forward, loss, backward, clip, step, schedule, EMA.

    Returns (loss, number of correct predictions, loss is finite) as device tensors; nothing
    here reads a device value on the host, except with skip_nonfinite (which returns None for
    a skipped step: the loss decides whether to step, a host read per step). A SAM optimizer
    (optim.SAM) gets a closure that recomputes the loss at the perturbed weights; with
    grad_clip, the gradient clipped is that second one, which the base optimizer steps with.
    scheduler None: the caller sets the next rate (fused_step.py). captured: the step is being
    recorded into a CUDA graph (autocast then runs without its cache of cast weights), and how
    the graph keeps its gradients: "zeroed" (the buffers stay and are zeroed after the step, so
    each replay's backward adds into zeros) or "fresh" (the graph was captured with no gradients,
    so each replay's backward writes them anew: no zeroing, no adding).
    """
    y_b, lam = None, 1.0
    if mixer is not None:  # y_b and lam are device tensors (lam 1 for a batch left unmixed)
        x, y, y_b, lam = mixer(x, y)
    with autocast(device, amp_dtype, cache=not captured):
        logits = model(x)
        loss = mixed_loss(criterion, logits, y, y_b, lam)
    if skip_nonfinite and not torch.isfinite(loss.detach()):
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        return None
    _backward(loss, scaler)

    def second_pass():
        with autocast(device, amp_dtype):
            second = mixed_loss(criterion, model(x), y, y_b, lam)
        _backward(second, scaler)
        if grad_clip > 0:  # the base optimizer steps with this gradient: clip it, not the first
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        return second

    closure = second_pass if getattr(optimizer, "needs_closure", False) else None
    if scaler is not None:
        scaler.unscale_(optimizer)
    # SAM normalises the first gradient, so clipping that one would change nothing.
    if grad_clip > 0 and closure is None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if scaler is not None:
        scaler.step(optimizer, closure) if closure is not None else scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step(closure) if closure is not None else optimizer.step()
    if captured != "fresh":
        optimizer.zero_grad(set_to_none=not captured)
    if scheduler is not None:
        scheduler.step()
    if ema is not None:
        ema.update_parameters(model)
    loss = loss.detach()
    return loss, mixed_correct(logits.detach(), y, y_b, lam), torch.isfinite(loss)


def accumulate(sums, first_bad, step, loss, n_correct, finite, n):
    """Adds a step's loss (times its n images) and correct count to sums (2,), and records
    `step` in first_bad (-1 until then) at the first non-finite loss; all in place, on the device."""
    sums += torch.stack([loss.float() * n, n_correct.float()])
    first_bad.copy_(torch.where((first_bad < 0) & ~finite, step, first_bad))


def train_one_epoch(model, loader, criterion, optimizer, scheduler, device, epoch, *, amp_dtype=None,
                    scaler=None, mixer=None, grad_clip=0.0, ema=None, skip_nonfinite=False,
                    max_steps=None, log_interval=50, progress=True, fused=None):
    """One pass over `loader`, one train_step per batch (or one call of `fused`, a
    fused_step.FusedStep that does the same work compiled or in a CUDA graph). The scheduler
    steps once per optimizer step. The host reads the device only every `log_interval` steps
    (the non-finite check and the progress bar) and at the end."""
    model.train()
    loader.set_epoch(epoch)
    n_steps = len(loader) if max_steps is None else min(len(loader), max_steps)
    if fused is not None:
        fused.begin_epoch()
        sums, first_bad = fused.sums, fused.first_bad
    else:
        sums = torch.zeros(2, device=device)  # loss sum, correct
        first_bad = torch.full((), -1, device=device, dtype=torch.long)
    seen = 0
    skipped = 0
    synchronize(device)
    start = time.perf_counter()
    bar = tqdm(total=n_steps, desc=f"train {epoch}", disable=not progress, leave=False, dynamic_ncols=True)
    kwargs = dict(amp_dtype=amp_dtype, scaler=scaler, mixer=mixer, grad_clip=grad_clip, ema=ema)
    rate = fused.lr if fused is not None else lambda: optimizer.param_groups[0]["lr"]
    lr = rate()  # the rate the epoch starts at (all of it, with the per-epoch schedule)
    for step, (x, y) in enumerate(loader):
        if step >= n_steps:
            break
        if fused is not None:
            fused(x, y)
        else:
            out = train_step(model, x, y, criterion, optimizer, scheduler, device, skip_nonfinite=skip_nonfinite,
                             **kwargs)
            if out is None:
                skipped += 1
                bar.update()
                continue
            accumulate(sums, first_bad, step, *out, y.shape[0])
        seen += y.shape[0]
        bar.update()
        if (step + 1) % log_interval == 0 or step + 1 == n_steps:
            if int(first_bad) >= 0 and scaler is None:
                bar.close()
                raise NonFiniteLoss(epoch + 1, int(first_bad) + 1)  # counted from 1, as the logs count
            if progress:
                loss_sum, correct = sums.tolist()
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}", lr=f"{rate():.2e}")
    bar.close()
    if fused is not None:
        fused.end_epoch()
    synchronize(device)
    seconds = time.perf_counter() - start
    loss_sum, correct, seen = _sum_over_ranks(*sums, seen)
    seen = max(seen, 1)
    return {
        "train_loss": loss_sum / seen,
        "train_acc": correct / seen,
        "lr": lr,
        "train_seconds": seconds,
        "train_images_per_second": seen / seconds if seconds > 0 else math.nan,
        "skipped_steps": skipped,
        "train_images": int(seen),
    }


@torch.no_grad()
def evaluate(model, loader, criterion, device, *, amp_dtype=None, max_steps=None, progress=True):
    """Test loss and accuracy (top-1 and top-5).

    A batch may hold more images than labels: the loader pads the last batch to a static shape
    on the device path, and the rows past the labels are padding, cut off before the loss.
    Running sums stay on the device until the end.
    """
    model.eval()
    sums = torch.zeros(3, device=device, dtype=torch.float64)  # loss, correct, top-5 correct
    seen = 0
    synchronize(device)
    start = time.perf_counter()
    n_steps = len(loader) if max_steps is None else min(len(loader), max_steps)
    bar = tqdm(total=n_steps, desc="eval", disable=not progress, leave=False, dynamic_ncols=True)
    for step, (x, y) in enumerate(loader):
        if step >= n_steps:
            break
        with autocast(device, amp_dtype):
            logits = model(x)
        logits = logits.float()[: y.shape[0]]
        k = min(5, logits.shape[-1])
        top5 = (logits.topk(k, dim=-1).indices == y[:, None]).any(dim=-1).sum()
        sums += torch.stack([criterion(logits, y).float() * y.shape[0], (logits.argmax(-1) == y).sum(), top5]).double()
        seen += y.shape[0]  # known on the host: no read of the device
        bar.update()
        if progress:  # a few large batches: reading the running numbers each time costs little
            loss, acc, _ = sums.tolist()
            bar.set_postfix(loss=f"{loss / seen:.4f}", acc=f"{acc / seen:.4f}")
    bar.close()
    synchronize(device)
    seconds = time.perf_counter() - start
    loss_sum, correct, correct5, seen = _sum_over_ranks(*sums, seen)
    seen = max(seen, 1)
    return {
        "test_loss": loss_sum / seen,
        "test_acc": correct / seen,
        "test_top5": correct5 / seen,
        "eval_seconds": seconds,
        "eval_images_per_second": seen / seconds if seconds > 0 else math.nan,
        "test_images": int(seen),
    }
