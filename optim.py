"""Optimizers and learning-rate schedules by name, plus SAM.

Schedules are stepped once per optimizer step, but by default the rate they give changes only
at epoch boundaries, because that is what ViT-CIFAR computed: PyTorch Lightning stepped its
GradualWarmupScheduler(multiplier=1, total_epoch=W) + CosineAnnealingLR(T_max=max_epochs,
eta_min=min_lr) once per epoch, so epoch e (0-based) trains at

    lr * e / W                                                  for e <= W  (epoch 0 at lr 0)
    min_lr + (lr - min_lr) * (1 + cos(pi * (e - W - 1) / max_epochs)) / 2   after

(1e-3 at epochs 5 and 6, then the cosine, ending at 1.299e-5 after 200 epochs, not at min_lr:
the cosine was never squeezed into the epochs left after warm-up). `--lr-per-step` gives the
modern form instead: per-step linear warm-up and a cosine that ends at min_lr on the last step.
Reduce-on-plateau looks at the test loss once per epoch either way. `timm_cosine` is timm's
CosineLRScheduler as timm's train.py runs it (warm-up from --warmup-lr, cosine over the epochs
before --cooldown-epochs), for the recipes trained with timm.
"""
import math

import torch

from utils import Registry, UserError

OPTIMIZERS = Registry("optimizer")
SCHEDULERS = Registry("scheduler")

NO_DECAY_NAMES = ("pos_embed", "cls_token", "position", "relative_position_bias_table")


def param_groups(model, weight_decay, exclude_norm_bias):
    """With exclude_norm_bias, biases, norm weights (every 1-d parameter) and position
    embeddings get no weight decay, as DeiT and timm do."""
    if not exclude_norm_bias:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim <= 1 or any(key in name for key in NO_DECAY_NAMES)
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# Each builder: fn(param_groups, *, lr, momentum, nesterov, beta1, beta2, fused, capturable). `fused`
# (CUDA) runs the whole update in a few launches instead of one per tensor; `capturable` keeps
# Adam's step counts on the device, so the update can be captured in a CUDA graph (--compile graphs).
def _fused(fused, capturable=False):
    return {**({"fused": True} if fused else {}), **({"capturable": True} if capturable else {})}


OPTIMIZERS.register("sgd", lambda groups, *, lr, momentum, nesterov, fused, **_: torch.optim.SGD(
    groups, lr=lr, momentum=momentum, nesterov=nesterov, **_fused(fused)))
OPTIMIZERS.register("adam", lambda groups, *, lr, beta1, beta2, fused, capturable=False, **_: torch.optim.Adam(
    groups, lr=lr, betas=(beta1, beta2), **_fused(fused, capturable)))
OPTIMIZERS.register("adamw", lambda groups, *, lr, beta1, beta2, fused, capturable=False, **_: torch.optim.AdamW(
    groups, lr=lr, betas=(beta1, beta2), **_fused(fused, capturable)))
OPTIMIZERS.register("rmsprop", lambda groups, *, lr, momentum, **_: torch.optim.RMSprop(
    groups, lr=lr, momentum=momentum, alpha=0.9, eps=1e-3))


@OPTIMIZERS.register("adan")
def _adan(groups, *, lr, **_):
    from timm.optim import Adan  # Xie et al. 2022; timm keeps the reference implementation
    return Adan(groups, lr=lr)


@OPTIMIZERS.register("madgrad")
def _madgrad(groups, *, lr, momentum, **_):
    from timm.optim import MADGRAD  # Defazio & Jelassi 2021
    return MADGRAD(groups, lr=lr, momentum=momentum)


class SAM(torch.optim.Optimizer):
    """Sharpness-Aware Minimization (Foret et al. 2021) around any base optimizer; with
    adaptive=True, ASAM (Kwon et al. 2021), whose perturbation scales with |w|.

    step(closure): w += rho * g / |g|, recompute the gradient there (closure), restore w,
    then let the base optimizer step with that gradient.
    """

    needs_closure = True

    def __init__(self, base, rho=0.05, adaptive=False):
        if rho <= 0:
            raise UserError(f"--sam-rho must be positive, got {rho}")
        self.base, self.rho, self.adaptive = base, rho, adaptive
        super().__init__(base.param_groups, dict(base.defaults))
        self.param_groups = base.param_groups
        self.state = base.state

    @torch.no_grad()
    def step(self, closure):
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        scaled = [(p.abs() if self.adaptive else 1.0) * p.grad for p in params]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(s) for s in scaled]))
        eps = [(p.abs() if self.adaptive else 1.0) * s * (self.rho / (norm + 1e-12)) for p, s in zip(params, scaled)]
        for p, e in zip(params, eps):
            p.add_(e)
        self.base.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss = closure()
        for p, e in zip(params, eps):
            p.sub_(e)
        self.base.step()
        return loss

    def zero_grad(self, set_to_none=True):
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return self.base.state_dict()

    def load_state_dict(self, state):
        self.base.load_state_dict(state)


def build_optimizer(model, *, name="adam", lr=1e-3, weight_decay=0.0, exclude_norm_bias=False, momentum=0.9,
                    nesterov=False, beta1=0.9, beta2=0.999, fused=False, sam=False, adaptive_sam=False, sam_rho=0.05,
                    capturable=False):
    groups = param_groups(model, weight_decay, exclude_norm_bias)
    optimizer = OPTIMIZERS.build(name, groups, lr=lr, momentum=momentum, nesterov=nesterov, beta1=beta1, beta2=beta2,
                                 fused=fused, **({"capturable": True} if capturable else {}))
    if sam or adaptive_sam:
        optimizer = SAM(optimizer, rho=sam_rho, adaptive=adaptive_sam)
    return optimizer


# ---------------------------------------------------------------- schedules (per step)

def warmup_cosine(step, *, warmup_steps, total_steps, base_lr, min_lr):
    """The learning rate at optimizer step `step` (0-based).

    Warm-up climbs linearly from base_lr / warmup_steps (not from 0, which would waste the
    first step) to base_lr at the last warm-up step; cosine then decays to exactly min_lr at
    the last step, total_steps - 1.
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = total_steps - 1 - warmup_steps
    if decay_steps <= 0:
        return min_lr if step >= total_steps - 1 else base_lr
    progress = min((step - warmup_steps) / decay_steps, 1.0)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def original_warmup_cosine(epoch, *, warmup_epochs, max_epochs, base_lr, min_lr):
    """ViT-CIFAR's learning rate during epoch `epoch` (0-based), as in the module docstring.

    With no warm-up the cosine starts at epoch 0 (the original's warm-up scheduler divides by
    zero there). A warm-up longer than the run simply never finishes, as in the original.
    """
    if warmup_epochs > 0 and epoch <= warmup_epochs:
        return base_lr * epoch / warmup_epochs
    t = epoch - warmup_epochs - 1 if warmup_epochs > 0 else epoch
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * t / max_epochs))


def _lambda(optimizer, lr_at):
    """LambdaLR over a function of the step that returns an absolute learning rate."""
    base = optimizer.param_groups[0]["lr"]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_at(step) / base)


def _warmup_factor(step, steps_per_epoch, warmup_epochs, per_step):
    """The warm-up multiplier at optimizer step `step`: per step from 1/warmup_steps, or, as the
    original's GradualWarmupScheduler, e / W during epoch e (epoch 0 at 0)."""
    if per_step:
        warmup_steps = warmup_epochs * steps_per_epoch
        return (step + 1) / warmup_steps if step < warmup_steps else 1.0
    epoch = step // steps_per_epoch
    return epoch / warmup_epochs if warmup_epochs > 0 and epoch < warmup_epochs else 1.0


@SCHEDULERS.register("cosine")
def _cosine(optimizer, *, lr, min_lr, warmup_epochs, max_epochs, steps_per_epoch, per_step, **_):
    if per_step:
        warmup, total = warmup_epochs * steps_per_epoch, max_epochs * steps_per_epoch
        return _lambda(optimizer, lambda s: warmup_cosine(s, warmup_steps=warmup, total_steps=total,
                                                          base_lr=lr, min_lr=min_lr))
    return _lambda(optimizer, lambda s: original_warmup_cosine(
        s // steps_per_epoch, warmup_epochs=warmup_epochs, max_epochs=max_epochs, base_lr=lr, min_lr=min_lr))


def timm_cosine(t, *, warmup_epochs, cosine_epochs, base_lr, min_lr, warmup_lr):
    """timm's CosineLRScheduler as timm's train.py runs it (one cycle, warmup_prefix False) at
    epoch `t` (a fraction of an epoch when stepped per step): linear warm-up from warmup_lr over
    warmup_epochs, a cosine counted from epoch 0 (not from the end of the warm-up) down to min_lr
    at cosine_epochs, then min_lr for the cool-down epochs that train.py adds after the cycle."""
    if t < warmup_epochs:
        return warmup_lr + t * (base_lr - warmup_lr) / warmup_epochs
    if t >= cosine_epochs:
        return min_lr
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * t / cosine_epochs))


@SCHEDULERS.register("timm_cosine")
def _timm_cosine(optimizer, *, lr, min_lr, warmup_epochs, max_epochs, steps_per_epoch, per_step, warmup_lr=0.0,
                 cooldown_epochs=0, **_):
    cosine_epochs = max_epochs - cooldown_epochs
    return _lambda(optimizer, lambda s: timm_cosine(
        s / steps_per_epoch if per_step else s // steps_per_epoch, warmup_epochs=warmup_epochs,
        cosine_epochs=cosine_epochs, base_lr=lr, min_lr=min_lr, warmup_lr=warmup_lr))


@SCHEDULERS.register("step")
def _step(optimizer, *, lr, warmup_epochs, steps_per_epoch, per_step, step_size, gamma, **_):
    return _lambda(optimizer, lambda s: lr * _warmup_factor(s, steps_per_epoch, warmup_epochs, per_step)
                   * gamma ** ((s // steps_per_epoch) // step_size))


@SCHEDULERS.register("multistep")
def _multistep(optimizer, *, lr, warmup_epochs, steps_per_epoch, per_step, milestones, gamma, **_):
    def lr_at(s):
        passed = sum(1 for m in milestones if s // steps_per_epoch >= m)
        return lr * _warmup_factor(s, steps_per_epoch, warmup_epochs, per_step) * gamma ** passed

    return _lambda(optimizer, lr_at)


@SCHEDULERS.register("constant")
def _constant(optimizer, *, lr, warmup_epochs, steps_per_epoch, per_step, **_):
    return _lambda(optimizer, lambda s: lr * _warmup_factor(s, steps_per_epoch, warmup_epochs, per_step))


class PlateauPerEpoch:
    """ReduceLROnPlateau on the test loss, once per epoch; its per-step step() does nothing."""

    def __init__(self, optimizer, *, gamma, patience, min_lr):
        self.inner = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=gamma, patience=patience, min_lr=min_lr)

    def step(self):
        pass

    def epoch_end(self, metrics):
        self.inner.step(metrics["test_loss"])

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)


SCHEDULERS.register("plateau", lambda optimizer, *, gamma, patience, min_lr, **_: PlateauPerEpoch(
    optimizer, gamma=gamma, patience=patience, min_lr=min_lr))


def build_scheduler(optimizer, *, name="cosine", steps_per_epoch, lr, min_lr=0.0, warmup_epochs=0, max_epochs,
                    per_step=False, step_size=30, milestones=(100, 150), gamma=0.1, patience=10, warmup_lr=0.0,
                    cooldown_epochs=0):
    return SCHEDULERS.build(name, optimizer, lr=lr, min_lr=min_lr, warmup_epochs=warmup_epochs, max_epochs=max_epochs,
                            steps_per_epoch=steps_per_epoch, per_step=per_step, step_size=step_size,
                            milestones=milestones, gamma=gamma, patience=patience, warmup_lr=warmup_lr,
                            cooldown_epochs=cooldown_epochs)
