"""The seed's command computes what ViT-CIFAR computed: the learning-rate curve, SAM with
gradient clipping, the EMA, and what `main.py --dataset c10 --label-smoothing --autoaugment`
builds. The references are written here from the original's published behaviour."""
import math

import pytest
import torch

import build
import main as cli
from engine import EMA, train_step
from build import make_optimizer, make_scheduler
from optim import SAM, original_warmup_cosine


def make_args(argv=(), **overrides):
    args = cli.get_args_parser().parse_args(list(argv))
    args.device_type = "cpu"
    for k, v in overrides.items():
        setattr(args, k, v)
    return args


class GradualWarmupReference:
    """ildoonet's GradualWarmupScheduler(multiplier=1, total_epoch=W, after_scheduler=cosine), as
    PyTorch Lightning drove it: constructed (which steps once, to last_epoch 0), then stepped
    once after every epoch. Written from its published behaviour:
      * while last_epoch <= W: lr = base * last_epoch / W;
      * at the first step past W: hand over to the after-scheduler (lr = its last lr, i.e. base);
      * after that, every step steps the after-scheduler (torch's CosineAnnealingLR here)."""

    def __init__(self, base, warmup, max_epochs, min_lr):
        self.opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
        self.cosine = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=max_epochs, eta_min=min_lr)
        self.base, self.warmup, self.last_epoch, self.finished = base, warmup, 0, False
        self.lr = base * 0 / warmup

    def step(self):
        self.last_epoch += 1
        if self.last_epoch <= self.warmup:
            self.lr = self.base * self.last_epoch / self.warmup
        elif not self.finished:
            self.finished = True
            self.lr = self.cosine.get_last_lr()[0]
        else:
            self.opt.step()
            self.cosine.step()
            self.lr = self.cosine.get_last_lr()[0]


def reference_curve(epochs=200, warmup=5, base=1e-3, min_lr=1e-5):
    ref, lrs = GradualWarmupReference(base, warmup, epochs, min_lr), []
    for _ in range(epochs):
        lrs.append(ref.lr)  # the rate the epoch trains at
        ref.step()
    return lrs


def test_reference_curve_is_the_published_one():
    lrs = reference_curve()
    assert lrs[:7] == pytest.approx([0, 2e-4, 4e-4, 6e-4, 8e-4, 1e-3, 1e-3], abs=1e-12)
    assert lrs[-1] == pytest.approx(1.299e-5, rel=1e-3)


def test_default_schedule_is_the_original_at_every_epoch():
    """The seed's 200-epoch / 5-warm-up run, stepped per optimizer step as the trainer does,
    gives the original's rate at every step of every epoch."""
    args = make_args()
    assert not args.lr_per_step and args.warmup_epoch == 5 and args.max_epochs == 200
    model = torch.nn.Linear(2, 2)
    opt = make_optimizer(model, args)
    steps_per_epoch = 3
    sched = make_scheduler(opt, args, steps_per_epoch)
    seen = []
    for _ in range(200 * steps_per_epoch):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [lr for lr in reference_curve() for _ in range(steps_per_epoch)]
    assert seen == pytest.approx(expected, rel=1e-9, abs=1e-15)
    # The modern form is a different curve, and says so by its flag.
    opt = make_optimizer(model, make_args(lr=1e-3))
    modern = make_scheduler(opt, make_args(["--lr-per-step"]), steps_per_epoch)
    assert modern.get_last_lr()[0] > 0


@pytest.mark.parametrize("epochs,warmup", [(10, 3), (3, 5), (4, 0)])
def test_original_schedule_other_lengths(epochs, warmup):
    if warmup == 0:  # the original's warm-up divides by zero here; ours starts the cosine at once
        expected = [1e-5 + (1e-3 - 1e-5) * (1 + math.cos(math.pi * e / epochs)) / 2 for e in range(epochs)]
    else:
        expected = reference_curve(epochs, warmup)
    got = [original_warmup_cosine(e, warmup_epochs=warmup, max_epochs=epochs, base_lr=1e-3, min_lr=1e-5)
           for e in range(epochs)]
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_warmup_longer_than_the_run_is_a_note_not_an_error(capsys):
    args = make_args(["--max-epochs", "2"])
    build.resolve_args(args)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--warmup-epoch 5" in err and "--max-epochs 2" in err


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


def test_sam_clips_the_gradient_the_base_step_uses():
    """SAM + --grad-clip: the base optimizer must step with the clipped SECOND gradient."""
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    crit, rho, clip, lr = torch.nn.CrossEntropyLoss(), 0.5, 0.01, 0.1

    # Reference: perturb along g1/|g1|, take the gradient there, clip it, SGD step from the original weights.
    ref = _net()
    loss = crit(ref(x), y)
    g1 = torch.autograd.grad(loss, list(ref.parameters()))
    norm = torch.sqrt(sum((g ** 2).sum() for g in g1))
    w0 = [p.detach().clone() for p in ref.parameters()]
    with torch.no_grad():
        for p, g in zip(ref.parameters(), g1):
            p.add_(g * rho / (norm + 1e-12))
    g2 = torch.autograd.grad(crit(ref(x), y), list(ref.parameters()))
    n2 = torch.sqrt(sum((g ** 2).sum() for g in g2))
    assert n2 > 10 * clip  # so that clipping matters
    expected = [w - lr * g * min(1.0, clip / (float(n2) + 1e-6)) for w, g in zip(w0, g2)]

    net = _net()
    opt = SAM(torch.optim.SGD(net.parameters(), lr=lr), rho=rho)
    sched = torch.optim.lr_scheduler.LambdaLR(opt.base, lambda s: 1.0)
    train_step(net, x, y, crit, opt, sched, torch.device("cpu"), grad_clip=clip)
    for p, e in zip(net.parameters(), expected):
        torch.testing.assert_close(p.detach(), e, rtol=1e-5, atol=1e-7)


def test_ema_equals_averaged_model_and_never_reads_the_device():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    ours = EMA(model, 0.9)
    ref = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.9),
                                              use_buffers=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(5):
        model(torch.randn(16, 4)).square().mean().backward()
        opt.step()
        opt.zero_grad()
        ours.update_parameters(model)
        ref.update_parameters(model)
    sd, rsd = ours.state_dict(), ref.state_dict()
    assert sd.keys() == rsd.keys()
    for k in sd:
        torch.testing.assert_close(sd[k].float(), rsd[k].float(), rtol=1e-6, atol=1e-7, msg=k)
    ours.load_state_dict(rsd)  # checkpoints written with AveragedModel still load

    from torch.utils._python_dispatch import TorchDispatchMode

    class Reads(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._local_scalar_dense.default:
                Reads.n += 1
            return func(*args, **(kwargs or {}))

    with Reads():
        ours.update_parameters(model)
    assert Reads.n == 0


def test_seed_command_builds_the_original():
    """`main.py --dataset c10 --label-smoothing --autoaugment`: the original network, the
    original's AutoAugment ops and label smoothing, the per-epoch schedule, CutMix over Mixup."""
    import autoaugment
    from criterions import LabelSmoothingCrossEntropy

    args = make_args(["--dataset", "c10", "--label-smoothing", "--autoaugment"])
    build.resolve_args(args)
    assert (args.aa_ops, args.mix_choice, args.lr_per_step) == ("original", "original", False)
    args.num_classes = 10
    model = build.make_model(args, 3)
    attn = model.blocks[0].attn
    assert attn.scale == pytest.approx(384 ** -0.5)  # sqrt(hidden), not sqrt(head dim)
    assert isinstance(list(model.blocks[0].mlp.children())[-2], torch.nn.GELU)  # GELU after the MLP output
    from augment import build_policy
    pil, batched = build_policy(args.policy, dataset_policy=args.aa_policy, ops=args.aa_ops)
    assert isinstance(pil, autoaugment.OriginalAutoAugment) and batched.ops == "original"
    from criterions import CRITERIONS
    crit = CRITERIONS.build(args.criterion, 10, args.label_smoothing, args.smoothing)
    assert isinstance(crit, LabelSmoothingCrossEntropy) and crit.smoothing == 0.1
