"""optim.py: learning rates at chosen steps, every optimizer and schedule steps, SAM."""

import pytest
import torch

import main as cli
from build import make_optimizer, make_scheduler
from optim import SAM, param_groups, warmup_cosine


def make_args(**overrides):
    args = cli.get_args_parser().parse_args([])
    args.device_type = "cpu"
    for k, v in overrides.items():
        setattr(args, k, v)
    return args


def test_warmup_cosine_values():
    kw = dict(warmup_steps=10, total_steps=110, base_lr=1e-3, min_lr=1e-5)
    assert warmup_cosine(0, **kw) == pytest.approx(1e-4)  # not 0: the first step already learns
    assert warmup_cosine(9, **kw) == pytest.approx(1e-3)
    assert warmup_cosine(10, **kw) == pytest.approx(1e-3)
    # Halfway through the decay: the mean of lr and min_lr.
    mid = 10 + (110 - 1 - 10) / 2
    assert warmup_cosine(mid, **kw) == pytest.approx((1e-3 + 1e-5) / 2)
    assert warmup_cosine(109, **kw) == pytest.approx(1e-5)


def test_scheduler_gives_those_rates_when_stepped():
    model = torch.nn.Linear(2, 2)
    args = make_args(warmup_epoch=2, max_epochs=10, lr=1e-3, min_lr=1e-5, lr_per_step=True)  # the modern form
    opt = make_optimizer(model, args)
    sched = make_scheduler(opt, args, 5)
    seen = []
    for _ in range(50):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [warmup_cosine(s, warmup_steps=10, total_steps=50, base_lr=1e-3, min_lr=1e-5) for s in range(50)]
    assert seen == pytest.approx(expected, rel=1e-9)
    assert seen[-1] == pytest.approx(1e-5)


def test_step_multistep_constant_schedules():
    def rates(name, **kw):
        model = torch.nn.Linear(2, 2)
        args = make_args(scheduler=name, warmup_epoch=0, max_epochs=10, lr=0.1, **kw)
        opt = make_optimizer(model, args)
        sched = make_scheduler(opt, args, 2)
        out = []
        for _ in range(20):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out[::2]  # one per epoch

    assert rates("step", step_size=3, gamma=0.5) == pytest.approx([0.1] * 3 + [0.05] * 3 + [0.025] * 3 + [0.0125])
    assert rates("multistep", milestones=[2, 5], gamma=0.1) == pytest.approx([0.1] * 2 + [0.01] * 3 + [0.001] * 5)
    assert rates("constant") == pytest.approx([0.1] * 10)


def test_plateau_reduces_on_stalled_loss():
    model = torch.nn.Linear(2, 2)
    args = make_args(scheduler="plateau", patience=1, gamma=0.5, lr=0.1, min_lr=0.0)
    opt = make_optimizer(model, args)
    sched = make_scheduler(opt, args, 1)
    for _ in range(4):
        sched.step()
        sched.epoch_end({"test_loss": 1.0})
    assert opt.param_groups[0]["lr"] < 0.1


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop", "adan", "madgrad"])
@pytest.mark.parametrize("sam", [None, "sam", "adaptive_sam"])
def test_every_optimizer_reduces_a_quadratic(name, sam):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    args = make_args(optimizer=name, lr=0.01, weight_decay=0.0, sam=sam == "sam", adaptive_sam=sam == "adaptive_sam")
    opt = make_optimizer(model, args)
    sched = make_scheduler(opt, make_args(**{**vars(args), "warmup_epoch": 0, "max_epochs": 1, "lr_per_step": True}), 100)
    x = torch.randn(64, 4)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])

    def loss_fn():
        return ((model(x) - y) ** 2).mean()

    first = loss_fn().item()
    for _ in range(30):
        loss = loss_fn()
        loss.backward()
        if sam:
            def closure():
                second = loss_fn()
                second.backward()
                return second
            opt.step(closure)
        else:
            opt.step()
        opt.zero_grad()
        sched.step()
    assert loss_fn().item() < first
    # The scheduler still steps under SAM: the lr moved along the cosine.
    assert opt.param_groups[0]["lr"] < 0.01


def test_sam_perturbs_then_restores():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    base = torch.optim.SGD([w], lr=0.1)
    sam = SAM(base, rho=0.5)
    (w ** 2).sum().backward()  # gradient (2, 4)
    grads_at = []

    def closure():
        grads_at.append(w.detach().clone())
        loss = (w ** 2).sum()
        loss.backward()
        return loss

    sam.step(closure)
    g = torch.tensor([2.0, 4.0])
    perturbed = torch.tensor([1.0, 2.0]) + 0.5 * g / g.norm()
    assert torch.allclose(grads_at[0], perturbed)
    # The update uses the gradient at the perturbed point, applied to the original weights.
    assert torch.allclose(w.detach(), torch.tensor([1.0, 2.0]) - 0.1 * 2 * perturbed)


def test_weight_decay_exclusion():
    import vit
    model = vit.build_vit(10, num_layers=1, hidden=32, mlp_hidden=32, head=4)
    decay, no_decay = param_groups(model, 0.05, exclude_norm_bias=True)
    names = {id(p): n for n, p in model.named_parameters()}
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert "pos_embed" in skipped and "cls_token" in skipped and "head.0.weight" in skipped
    assert all(p.ndim == 2 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0


@pytest.mark.parametrize("per_step", [False, True], ids=["per-epoch", "per-step"])
def test_timm_cosine_is_timms_cosine_scheduler_with_its_cooldown(per_step):
    """--scheduler timm_cosine against timm's own CosineLRScheduler, stepped as timm's train.py
    steps it (per epoch, or per update with t_in_epochs=False), with CCT-7/3x1's CIFAR-10 numbers:
    300 cosine epochs + 10 cool-down epochs, 10 warm-up epochs from 1e-5, lr 5.5e-4, min 1e-5."""
    from timm.scheduler import CosineLRScheduler
    steps_per_epoch = 3
    args = make_args(scheduler="timm_cosine", lr=5.5e-4, min_lr=1e-5, warmup_epoch=10, warmup_lr=1e-5,
                     cooldown_epochs=10, max_epochs=310, lr_per_step=per_step, optimizer="adamw")
    ours = make_scheduler(make_optimizer(torch.nn.Linear(2, 2), args), args, steps_per_epoch)
    theirs_opt = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=5.5e-4)
    scale = steps_per_epoch if per_step else 1
    theirs = CosineLRScheduler(theirs_opt, t_initial=300 * scale, lr_min=1e-5, warmup_t=10 * scale,
                               warmup_lr_init=1e-5, t_in_epochs=not per_step)
    for step in range(310 * steps_per_epoch):
        if per_step:
            theirs.step_update(step)
        elif step % steps_per_epoch == 0:
            theirs.step(step // steps_per_epoch)
        assert ours.get_last_lr()[0] == pytest.approx(theirs_opt.param_groups[0]["lr"], rel=1e-12, abs=1e-15), step
        ours.step()
    assert ours.get_last_lr()[0] == pytest.approx(1e-5)  # the cool-down holds min_lr
