"""Tests of the transformer zoo (models/ vit_variants, cait, swin, mixer, mobilevit, cct, k47) as a
whole: the registry is complete, every model builds, trains a step, has its expected size (and the
published sizes where they exist), takes other channel counts and image sizes, and a small model
memorises a batch. CPU only. The attention maths and building blocks are in test_vit_zoo_layers.py,
CCT / ViT-Lite / CVT in test_vit_zoo_cct.py, the k47_* models against their references in
test_vit_zoo_k47.py; the shared counts and sizes in zoo_helpers.py."""
import os
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import models  # noqa: E402
from models import cait, cct, k47, mixer, mobilevit, swin, vit_variants  # noqa: E402
from zoo_helpers import EXPECTED_PARAMS, SMALL, build, n_params  # noqa: E402

ZOO_MODULES = {m.__name__ for m in (vit_variants, cait, swin, mixer, mobilevit, cct, k47)}
ZOO = [n for n in models.model_names() if models.MODELS.get(n).builder.__module__ in ZOO_MODULES]


def forward_recording_first_layer(model, x):
    """model(x), and the first Conv2d / Linear that the pass ran (found with hooks, not by name)."""
    order = []
    hooks = [m.register_forward_hook(lambda mod, i, o: order.append(mod))
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        out = model(x)
    finally:
        for h in hooks:
            h.remove()
    return out, order[0]


def test_registry_is_complete():
    assert set(ZOO) == set(EXPECTED_PARAMS)
    for name in ZOO:
        spec = models.MODELS.get(name)
        assert spec.builder.__name__ == f"build_{name}" and not spec.args and not spec.kwargs
        assert spec.about


@pytest.mark.parametrize("name", ZOO)
def test_builds_trains_and_counts(name):
    torch.manual_seed(0)
    # depth=None is "not set" (the model's default) for the models that have a depth
    depth = dict(depth=None) if "depth" in models.accepted_options(name) else {}
    model = models.build_model(name, 10, 32, 3, dropout=0.1, drop_path=0.1, **depth)
    assert n_params(model) == EXPECTED_PARAMS[name]
    with pytest.raises(TypeError):  # the builders take no option they do not use
        build(name, 10, some_unknown_option=1)

    out, stem = forward_recording_first_layer(model.train(), torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()
    F.cross_entropy(out, torch.tensor([1, 7])).backward()
    assert stem.weight.grad is not None and stem.weight.grad.abs().sum() > 0
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unused, f"parameters outside the graph: {unused}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_published_param_counts():
    # CCT-7/3x1, CIFAR-10: 3.76M (Hassani et al. 2021, table 1).
    assert abs(EXPECTED_PARAMS["cct_7_3x1"] / 3.76e6 - 1) < 0.01
    # ViT-Lite-7/4 and CVT-7/4, CIFAR-10: 3.717M each (Compact-Transformers README table), to the digit.
    assert round(EXPECTED_PARAMS["vit_lite_7_4"] / 1e6, 3) == round(EXPECTED_PARAMS["cvt_7_4"] / 1e6, 3) == 3.717
    # ConvMixer-256/8 (kernel 5, patch 2): 0.6M (Trockman & Kolter 2022, CIFAR-10 table).
    assert abs(EXPECTED_PARAMS["convmixer"] / 0.6e6 - 1) < 0.02
    # MobileViT-XXS, ImageNet head: 1.27M (ml-cvnets / timm; the paper rounds to 1.3M). The network
    # has no position embedding, so the count does not depend on the image size.
    assert abs(n_params(mobilevit.build_mobilevit_xxs(1000)) / 1.27e6 - 1) < 0.01
    # Swin-T, ImageNet head: 28.29M (torchvision swin_t). Patch 2 / window 4 change it by only the
    # patch-embedding conv and the smaller relative-position tables.
    assert abs(n_params(swin.build_swin_t(1000)) / 28.29e6 - 1) < 0.005


@pytest.mark.parametrize("name,in_chans,image_size", [
    ("convmixer", 1, 32), ("simple_vit", 3, 64), ("vit_spt_lsa", 1, 64), ("cait", 1, 32),
    ("swin_t", 3, 64), ("mlp_mixer", 1, 64), ("mobilevit_xxs", 1, 64), ("cct_7_3x1", 1, 64),
    ("vit_lite_7_4", 1, 64), ("cvt_7_4", 3, 48),
    ("k47_vit", 1, 64), ("k47_vit_small", 1, 48), ("k47_simplevit", 3, 64), ("k47_cait", 1, 48)])
def test_other_channels_and_sizes(name, in_chans, image_size):
    torch.manual_seed(0)
    model = build(name, 10, image_size, in_chans, **SMALL[name]).eval()
    x = torch.randn(2, in_chans, image_size, image_size)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_size_overrides_and_bad_image_size():
    small = vit_variants.build_simple_vit(10, depth=2, dim=64, heads=2, mlp_dim=128)
    assert len(small.blocks) == 2 and small.head.in_features == 64
    with pytest.raises(ValueError):
        vit_variants.build_simple_vit(10, image_size=30)


def test_small_model_memorises_a_batch():
    """32 random images with random labels: a small LSA ViT must fit them (eval mode) in <= 150 steps."""
    torch.manual_seed(0)
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    model = vit_variants.build_vit_spt_lsa(10, dim=64, depth=1, heads=2, dim_head=32, mlp_dim=64)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        out = model(x)
        opt.zero_grad()
        F.cross_entropy(out, y).backward()
        opt.step()
        if (out.argmax(1) == y).all():
            break
    with torch.no_grad():
        acc = (model.eval()(x).argmax(1) == y).float().mean().item()
    assert acc >= 0.95
