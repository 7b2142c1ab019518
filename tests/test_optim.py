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
