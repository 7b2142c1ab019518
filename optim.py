"""Optimizers and learning-rate schedules by name, plus SAM.

All schedules are stepped once per optimizer step (so warm-up is smooth even over a single
epoch), except reduce-on-plateau, which looks at the test loss once per epoch.
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


def _fused(args):
    # The fused CUDA kernels run the whole update in a few launches instead of one per tensor.
    return {"fused": True} if args.device_type == "cuda" else {}


OPTIMIZERS.register("sgd", lambda groups, args: torch.optim.SGD(
    groups, lr=args.lr, momentum=args.momentum, nesterov=args.nesterov, **_fused(args)))
OPTIMIZERS.register("adam", lambda groups, args: torch.optim.Adam(
    groups, lr=args.lr, betas=(args.beta1, args.beta2), **_fused(args)))
OPTIMIZERS.register("adamw", lambda groups, args: torch.optim.AdamW(
    groups, lr=args.lr, betas=(args.beta1, args.beta2), **_fused(args)))
OPTIMIZERS.register("rmsprop", lambda groups, args: torch.optim.RMSprop(
    groups, lr=args.lr, momentum=args.momentum, alpha=0.9, eps=1e-3))


@OPTIMIZERS.register("adan")
def _adan(groups, args):
    from timm.optim import Adan  # Xie et al. 2022; timm keeps the reference implementation
    return Adan(groups, lr=args.lr)


@OPTIMIZERS.register("madgrad")
def _madgrad(groups, args):
    from timm.optim import MADGRAD  # Defazio & Jelassi 2021
    return MADGRAD(groups, lr=args.lr, momentum=args.momentum)


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


def build_optimizer(model, args):
    groups = param_groups(model, args.weight_decay, args.wd_exclude_norm_bias)
    optimizer = OPTIMIZERS.build(args.optimizer, groups, args)
    if args.sam or args.adaptive_sam:
        optimizer = SAM(optimizer, rho=args.sam_rho, adaptive=args.adaptive_sam)
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


def _lambda(optimizer, lr_at):
    """LambdaLR over a function of the step that returns an absolute learning rate."""
    base = optimizer.param_groups[0]["lr"]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_at(step) / base)


def _warmup(step, warmup_steps):
    return (step + 1) / warmup_steps if step < warmup_steps else 1.0


@SCHEDULERS.register("cosine")
def _cosine(optimizer, args, steps_per_epoch):
    warmup, total = args.warmup_epoch * steps_per_epoch, args.max_epochs * steps_per_epoch
    return _lambda(optimizer, lambda s: warmup_cosine(s, warmup_steps=warmup, total_steps=total,
                                                      base_lr=args.lr, min_lr=args.min_lr))


@SCHEDULERS.register("step")
def _step(optimizer, args, steps_per_epoch):
    warmup = args.warmup_epoch * steps_per_epoch
    return _lambda(optimizer, lambda s: args.lr * _warmup(s, warmup) * args.gamma ** ((s // steps_per_epoch) // args.step_size))


@SCHEDULERS.register("multistep")
def _multistep(optimizer, args, steps_per_epoch):
    warmup = args.warmup_epoch * steps_per_epoch

    def lr_at(s):
        passed = sum(1 for m in args.milestones if s // steps_per_epoch >= m)
        return args.lr * _warmup(s, warmup) * args.gamma ** passed

    return _lambda(optimizer, lr_at)


@SCHEDULERS.register("constant")
def _constant(optimizer, args, steps_per_epoch):
    warmup = args.warmup_epoch * steps_per_epoch
    return _lambda(optimizer, lambda s: args.lr * _warmup(s, warmup))


class PlateauPerEpoch:
    """ReduceLROnPlateau on the test loss, once per epoch; its per-step step() does nothing."""

    def __init__(self, optimizer, args):
        self.inner = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=args.gamma, patience=args.patience, min_lr=args.min_lr)

    def step(self):
        pass

    def epoch_end(self, metrics):
        self.inner.step(metrics["test_loss"])

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)


SCHEDULERS.register("plateau", lambda optimizer, args, steps_per_epoch: PlateauPerEpoch(optimizer, args))


def build_scheduler(optimizer, args, steps_per_epoch):
    return SCHEDULERS.build(args.scheduler, optimizer, args, steps_per_epoch)
