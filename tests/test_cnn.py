"""
Tests for the reference CNNs (models/ vgg, resnet, pyramidnet, torchvision_nets). All on CPU with tiny batches.

EXPECTED_PARAMS pins the parameter count of every registered model (num_classes=10,
image_size=32, in_chans=3), so an accidental change of architecture fails loudly.
Where a published figure exists it is noted next to the count. OPTIONS pins the
options each family accepts (and so refuses the rest).
"""

import inspect

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import SqueezeExcitation, StochasticDepth

import models
from conftest import model_params
from models import pyramidnet, resnet, torchvision_nets, vgg
from models.pyramidnet import ShakeDrop, build_pyramidnet
from models.resnet import BasicBlock, Bottleneck, PreActBlock, PreActBottleneck
from utils import UserError

# The CNNs of the registry, callable as MODELS[name](num_classes, image_size, in_chans, **options).
CNN_MODULES = {m.__name__ for m in (vgg, resnet, pyramidnet, torchvision_nets)}
MODELS = {n: models.MODELS.get(n) for n in models.model_names()
          if models.MODELS.get(n).builder.__module__ in CNN_MODULES}

EXPECTED_PARAMS = {
    "cnn": 94_762,
    "resnet18": 11_173_962,  # kuangliu/pytorch-cifar ResNet18: 11,173,962
    "resnet34": 21_282_122,
    "resnet50": 23_520_842,  # kuangliu ResNet50: 23,520,842
    "resnet101": 42_512_970,
    "resnet152": 58_156_618,
    # kuangliu's PreActResNet has no BN-ReLU after the last block; He et al. 2016 (and
    # ours) do, so each count is kuangliu's + 2 * final width (PreActResNet18: 11,171,146 + 1,024)
    "preact_resnet18": 11_172_170,
    "preact_resnet34": 21_280_330,
    "preact_resnet50": 23_513_162,
    "preact_resnet101": 42_505_290,
    "preact_resnet152": 58_148_938,
    "wrn28_10": 36_479_194,  # Zagoruyko & Komodakis: 36.5M (their code: 36,479,194)
    # Han et al. report 28.3M and 26.0M; the authors' own code (dyhan0920/PyramidNet-PyTorch,
    # whose channel arithmetic this follows) gives these, ~0.7% more
    "pyramidnet110": 28_485_477,
    "pyramidnet272": 26_210_842,
    "vgg16": 14_728_266,  # kuangliu VGG16 (BN): 14,728,266
    "vgg19": 20_040_522,
    # torchvision's ImageNet counts minus the 1000-way head (same stem size):
    # efficientnet_v2_s 21,458,488 - 1,268,190
    "efficientnetv2_s": 20_190_298,
    "efficientnetv2_m": 52_871_166,
    "efficientnetv2_l": 117_247_082,
    # torchvision's ImageNet counts minus the 1000-way head and the smaller 2x2 stem:
    # convnext_tiny 28,589,128 - 761,310 - 3,456
    "convnext_tiny": 27_824_362,
    "convnext_small": 49_458_922,
    "convnext_base": 87_572_106,
    "convnext_large": 196_238_794,
}

RESNET_OPTIONS = {"dropout", "drop_path", "bottleneck", "zero_init_residual", "se"}
OPTIONS = {  # by builder
    "cnn": {"dropout"},
    "resnet": RESNET_OPTIONS,
    "preact_resnet": RESNET_OPTIONS,
    "wide_resnet": {"dropout", "drop_path", "block_dropout"},
    "pyramidnet": {"dropout", "shakedrop"},
    "vgg": {"dropout"},
    "efficientnetv2": {"dropout", "drop_path"},
    "convnext": {"dropout", "drop_path"},
}

# cheap models that between them cover every family
SMALL = ["cnn", "resnet18", "preact_resnet18", "pyramidnet110", "vgg16", "efficientnetv2_s", "convnext_tiny"]


pytestmark = pytest.mark.usefixtures("one_thread_module")


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def first_conv(model):
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


def last_linear_and_previous(model):
    modules = list(model.modules())
    i = max(k for k, m in enumerate(modules) if isinstance(m, nn.Linear))
    return modules[i], modules[i - 1]


def test_registry_is_complete():
    assert set(MODELS) == set(EXPECTED_PARAMS)


@pytest.mark.parametrize("name", list(MODELS))
def test_builder_signature_and_options(name):
    spec = MODELS[name]
    params = list(inspect.signature(spec.builder).parameters.values())[len(spec.args):]
    assert [p.name for p in params[:3]] == ["num_classes", "image_size", "in_chans"]
    assert params[0].default is inspect.Parameter.empty
    assert params[1].default == 32 and params[2].default == 3
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)  # nothing dropped silently
    family = spec.builder.__name__.removeprefix("build_")
    assert models.accepted_options(name) == OPTIONS[family]
    for kw in ("dropout", "drop_path"):
        if kw in OPTIONS[family]:
            p = next(p for p in params if p.name == kw)
            assert p.kind is inspect.Parameter.KEYWORD_ONLY and p.default == 0.0


# Over 80M parameters: several seconds each for a forward and backward on a small CPU.
@pytest.mark.parametrize("name", model_params(MODELS))
def test_forward_backward_and_param_count(name):
    torch.manual_seed(0)
    model = MODELS[name](10, image_size=32, in_chans=3)
    assert n_params(model) == EXPECTED_PARAMS[name]

    model.train()
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()
    F.cross_entropy(out, torch.tensor([1, 7])).backward()

    # the first parameter is the stem conv: gradient must reach all the way back
    stem = next(model.parameters())
    assert stem.dim() == 4 and stem.shape[1] == 3
    assert stem.grad is not None
    assert torch.isfinite(stem.grad).all()
    assert stem.grad.abs().sum() > 0
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"


@pytest.mark.parametrize("name", ["cnn", "preact_resnet18", "vgg16", "efficientnetv2_s", "convnext_tiny"])
def test_grayscale_and_larger_images(name):
    # 40 is not a power of two: VGG's pools go 40 -> 20 -> 10 -> 5 -> 2 -> 1
    torch.manual_seed(0)
    model = MODELS[name](10, image_size=40, in_chans=1).eval()
    assert first_conv(model).in_channels == 1
    with torch.no_grad():
        out = model(torch.randn(2, 1, 40, 40))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", SMALL)
def test_final_dropout_and_foreign_options(name):
    # options meant for other models (a ViT's depth, patch size) are refused, not ignored;
    # an option given as None counts as not given
    for foreign in (dict(depth=6), dict(patch_size=4), dict(no_such_option=123)):
        with pytest.raises(UserError):
            models.build_model(name, 10, 32, 3, **foreign)
    model = models.build_model(name, 10, 32, 3, dropout=0.3, drop_path=None, se=None, shakedrop=None)
    assert n_params(model) == EXPECTED_PARAMS[name]
    # dropout sits right before the final linear layer
    linear, before = last_linear_and_previous(model)
    assert linear.out_features == 10
    assert isinstance(before, nn.Dropout) and before.p == 0.3


def test_drop_path_rates():
    model = MODELS["resnet18"](10, drop_path=0.2)
    rates = [m.p for m in model.modules() if isinstance(m, StochasticDepth)]
    assert rates == pytest.approx([0.2 * i / 7 for i in range(8)])
    assert all(m.p == 0.0 for m in MODELS["resnet18"](10).modules() if isinstance(m, StochasticDepth))

    rates = [m.p for m in MODELS["convnext_tiny"](10, drop_path=0.2).modules() if isinstance(m, StochasticDepth)]
    assert max(rates) == pytest.approx(0.2)
    rates = [m.p for m in MODELS["efficientnetv2_s"](10, drop_path=0.2).modules() if isinstance(m, StochasticDepth)]
    assert 0.0 < max(rates) <= 0.2

    # stochastic depth is random in training and off in eval
    model = MODELS["resnet18"](10, drop_path=0.5)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        model.train()
        torch.manual_seed(0)
        a = model(x)
        torch.manual_seed(1)
        assert not torch.allclose(a, model(x))
        model.eval()
        assert torch.equal(model(x), model(x))


# -----------------------------------------------------------------------------
# ResNet options


@pytest.mark.parametrize("name,block,last", [
    ("resnet18", BasicBlock, "bn2"),
    ("resnet50", Bottleneck, "bn3"),
    ("preact_resnet18", PreActBlock, "conv2"),
    ("preact_resnet50", PreActBottleneck, "conv3"),
])
def test_zero_init_residual(name, block, last):
    blocks = [m for m in MODELS[name](10, zero_init_residual=True).modules() if isinstance(m, block)]
    assert len(blocks) > 0
    for b in blocks:
        assert torch.all(getattr(b, last).weight == 0)
        # only the last layer of the branch is zeroed
        assert b.conv1.weight.abs().sum() > 0
    # and the default leaves them alone
    for b in (m for m in MODELS[name](10).modules() if isinstance(m, block)):
        assert getattr(b, last).weight.abs().sum() > 0


def test_zero_init_residual_starts_blocks_as_identity():
    # with the residual branch zeroed, a stride-1 block maps x >= 0 to itself
    block = BasicBlock(16, 16)
    block.zero_init_last()
    block.eval()
    x = torch.rand(2, 16, 8, 8)
    with torch.no_grad():
        assert torch.allclose(block(x), x)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_squeeze_excitation_adds_parameters(name):
    plain = MODELS[name](10)
    model = MODELS[name](10, se=True)
    n_blocks = sum(isinstance(m, (BasicBlock, Bottleneck, PreActBlock, PreActBottleneck)) for m in model.modules())
    assert sum(isinstance(m, SqueezeExcitation) for m in model.modules()) == n_blocks
    assert not any(isinstance(m, SqueezeExcitation) for m in plain.modules())
    assert n_params(model) > n_params(plain)
    # the gates are used: every SE weight gets a gradient
    out = model.train()(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    out.square().mean().backward()
    for se in (m for m in model.modules() if isinstance(m, SqueezeExcitation)):
        for p in se.parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0


def test_bottleneck_override():
    assert any(isinstance(m, Bottleneck) for m in MODELS["resnet18"](10, bottleneck=True).modules())
    assert not any(isinstance(m, BasicBlock) for m in MODELS["resnet18"](10, bottleneck=True).modules())
    assert any(isinstance(m, BasicBlock) for m in MODELS["resnet50"](10, bottleneck=False).modules())
    assert any(isinstance(m, PreActBottleneck) for m in MODELS["preact_resnet18"](10, bottleneck=True).modules())


def test_wide_resnet_block_dropout():
    model = MODELS["wrn28_10"](10, block_dropout=0.3)
    blocks = [m for m in model.modules() if isinstance(m, PreActBlock)]
    assert len(blocks) == 12  # (28 - 4) / 6 = 4 blocks per stage
    assert all(b.dropout.p == 0.3 for b in blocks)
    assert all(b.dropout.p == 0.0 for b in MODELS["wrn28_10"](10).modules() if isinstance(b, PreActBlock))


# -----------------------------------------------------------------------------
# ShakeDrop


def test_shakedrop_eval_scales_by_keep_probability():
    x = torch.randn(8, 4, 5, 5)
    sd = ShakeDrop(0.3).eval()
    assert torch.allclose(sd(x), x * 0.7)


def test_shakedrop_train_is_random_with_the_right_mean():
    torch.manual_seed(0)
    p = 0.5
    sd = ShakeDrop(p).train()
    x = torch.full((40_000, 3), 2.0)
    a, b = sd(x), sd(x)
    assert not torch.equal(a, b)
    # one gate per sample: every row is scaled by a single factor
    assert torch.allclose(a, a[:, :1].expand_as(a))
    # E[b + alpha - b * alpha] = 1 - p; the factor's std is ~0.65, so the mean of 40k
    # draws has a standard error of ~0.0032 (0.0065 for x = 2): the bound is ~9 of those
    assert a.mean().item() == pytest.approx((1 - p) * 2.0, abs=0.06)
    # dropped samples are scaled by alpha in [-1, 1]: some of them flip sign
    assert (a < 0).any()
    # p = 0 is the identity in training
    assert torch.equal(ShakeDrop(0.0).train()(x), x)


def test_shakedrop_backward_uses_beta_not_alpha():
    torch.manual_seed(0)
    # p = 1: every sample is dropped, forward gate is alpha ~ U(-1, 1), backward beta ~ U(0, 1)
    x = torch.ones(10_000, 1, requires_grad=True)
    y = ShakeDrop(1.0).train()(x)
    y.sum().backward()
    forward_gate, backward_gate = y.detach().squeeze(1), x.grad.squeeze(1)
    assert (forward_gate < 0).any()
    assert (backward_gate >= 0).all() and (backward_gate <= 1).all()
    assert backward_gate.mean().item() == pytest.approx(0.5, abs=0.02)
    assert not torch.allclose(forward_gate, backward_gate)

    # p = 0.5: E[b + beta - b * beta] = 0.5 * 1 + 0.5 * 0.5 = 0.75
    x = torch.ones(40_000, 1, requires_grad=True)
    ShakeDrop(0.5).train()(x).sum().backward()
    assert x.grad.mean().item() == pytest.approx(0.75, abs=0.02)


def test_pyramidnet_shakedrop_schedule():
    model = MODELS["pyramidnet110"](10, shakedrop=0.5)
    ps = [m.p_drop for m in model.modules() if isinstance(m, ShakeDrop)]
    assert len(ps) == 54  # (110 - 2) / 6 = 18 blocks per stage
    assert ps == pytest.approx([0.5 * (i + 1) / 54 for i in range(54)])
    ps = [m.p_drop for m in MODELS["pyramidnet272"](10, shakedrop=0.3).modules() if isinstance(m, ShakeDrop)]
    assert len(ps) == 90 and ps[-1] == pytest.approx(0.3)

    # deterministic in eval mode, random in training (a small PyramidNet-20 keeps it quick)
    model = build_pyramidnet(20, 48, False, 10, shakedrop=0.5)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(x), model(x))
        model.train()
        torch.manual_seed(0)
        a = model(x)
        torch.manual_seed(1)
        assert not torch.allclose(a, model(x))


# -----------------------------------------------------------------------------
# learning


def test_cnn_memorises_a_random_batch():
    # 64 random images with random labels: nothing to generalise, so reaching 100%
    # train accuracy shows the forward, backward and update all work together
    torch.manual_seed(0)
    model = MODELS["cnn"](10).train()
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    first_loss = None
    for step in range(100):
        out = model(x)
        loss = F.cross_entropy(out, y)
        first_loss = first_loss or loss.item()
        if (out.argmax(1) == y).all():
            break  # memorised; the rest of the 100 steps would only cost time
        opt.zero_grad()
        loss.backward()
        opt.step()
    accuracy = (out.argmax(1) == y).float().mean().item()
    assert accuracy == 1.0, f"only {accuracy:.0%} train accuracy after {step + 1} steps"
    assert loss.item() < 0.5 * first_loss
