"""augment.py's and extras.py's builders (the extras, the mixers, the policies) and the op-count audit: a fixed
number of ops per call, no host syncs, no host-to-device copies; and a whole augmentation step
compiles as one graph (marked slow).
"""
import pytest
import torch

import augment
from augment import BatchMixer, CutMix, MixUp, build_mixer, count_ops, random_crop, random_hflip
from extras import Cutout, RandomCropPaste, RandomErasing, ZhongErasing, build_extras
from conftest import gen
from utils import UserError


# ---------------------------------------------------------------- builders

def test_build_extras():
    assert build_extras() == []
    extras = build_extras(rcpaste=True, cutout=8, random_erasing=0.25)
    assert [type(e) for e in extras] == [RandomCropPaste, Cutout, RandomErasing]
    zhong = build_extras(random_erasing=0.25, erasing_style="zhong", mean=(0.5, 0.25, 0.125))
    assert [type(e) for e in zhong] == [ZhongErasing] and zhong[0].value == (0.5, 0.25, 0.125)
    with pytest.raises(UserError, match="erasing style"):
        build_extras(random_erasing=0.25, erasing_style="nope")
    assert extras[1].size == 8 and extras[2].p == 0.25


def test_build_mixer():
    assert build_mixer() is None
    assert build_mixer(cutmix=True).prob == 1.0
    assert build_mixer(mixup=True).prob == 0.8
    assert build_mixer(mixup=True, mix_prob=0.5).prob == 0.5
    both = build_mixer(mixup=True, cutmix=True, choice="random", mixup_alpha=0.2, cutmix_beta=0.5)
    assert [type(m) for m in both.mixers] == [MixUp, CutMix] and both.prob == 1.0
    assert both.mixers[0].alpha == 0.2 and both.mixers[1].beta == 0.5
    with pytest.raises(UserError):
        build_mixer(mixup=True, choice="sometimes")
    with pytest.raises(UserError):
        build_mixer(mixup=True, mix_prob=1.5)
    with pytest.raises(ValueError):
        BatchMixer([])


def test_build_policy_none_and_unknown():
    assert augment.build_policy("none") == (None, None)
    assert set(augment.POLICIES.names()) == {"autoaugment", "randaugment", "trivialaugment", "timm_randaugment",
                                             "k47_randaugment", "none"}
    with pytest.raises(UserError):
        augment.build_policy("everything")


def _has_original_autoaugment():
    try:
        import autoaugment
    except Exception:  # being rewritten elsewhere; its own tests report it
        return False
    return hasattr(autoaugment, "OriginalAutoAugment")


@pytest.mark.skipif(not _has_original_autoaugment(), reason="autoaugment.OriginalAutoAugment not written yet")
def test_build_policy():
    import torchvision.transforms as T

    import autoaugment as aa
    pil, batch = augment.build_policy("autoaugment", dataset_policy="svhn")
    assert isinstance(pil, aa.OriginalAutoAugment) and isinstance(batch, aa.BatchAutoAugment)
    pil, batch = augment.build_policy("autoaugment", ops="torchvision")
    assert isinstance(pil, T.AutoAugment) and pil.policy == T.AutoAugmentPolicy.CIFAR10
    pil, batch = augment.build_policy("randaugment", ra_n=1, ra_m=5)
    assert isinstance(pil, T.RandAugment) and (pil.num_ops, pil.magnitude) == (1, 5)
    assert isinstance(batch, aa.BatchRandAugment)
    pil, batch = augment.build_policy("trivialaugment")
    assert isinstance(pil, T.TrivialAugmentWide) and isinstance(batch, aa.BatchTrivialAugmentWide)


# ---------------------------------------------------------------- op-count audit

UINT8 = dict(dtype=torch.uint8)
LABELS = dict(with_labels=True)
AUDITED = {
    "crop": (lambda x: random_crop(x, 4), UINT8),
    "flip": (random_hflip, UINT8),
    "rcpaste": (RandomCropPaste(), {}),
    "cutout": (Cutout(16), {}),
    "random_erasing": (RandomErasing(0.25), {}),
    "mixup": (MixUp(), LABELS),
    "cutmix": (CutMix(), LABELS),
    "mixup_p0.8": (build_mixer(mixup=True), LABELS),
    "cutmix_original": (build_mixer(mixup=True, cutmix=True), LABELS),
    "either_random": (build_mixer(mixup=True, cutmix=True, choice="random", mix_prob=0.5), LABELS),
}


@pytest.mark.parametrize("name", AUDITED)
def test_fixed_op_count_no_syncs_no_host_copies(name):
    fn, kw = AUDITED[name]
    small, large = count_ops(fn, 8, **kw), count_ops(fn, 256, **kw)
    assert small["by_op"] == large["by_op"] and small["ops"] == large["ops"] > 0
    for counts in (small, large):
        assert counts["syncs"] == 0 and counts["blocking_copies"] == 0 and counts["host_inputs"] == 0
        assert "aten._local_scalar_dense.default" not in counts["by_op"]


def test_count_ops_sees_syncs_and_host_copies():
    assert count_ops(lambda x: x.sum().item(), 4)["syncs"] == 1
    assert count_ops(lambda x: x[x > 0], 4)["syncs"] >= 1  # boolean-mask indexing
    assert count_ops(lambda x: x + torch.ones(1).to(x.device), 4)["blocking_copies"] == 1
    assert count_ops(lambda x: x * torch.tensor(2.0), 4)["host_inputs"] == 1


@pytest.mark.slow
def test_compiles_full_graph():
    cutout = Cutout(8)
    mixer = build_mixer(mixup=True, cutmix=True, choice="random", mix_prob=0.5)

    def step(x, y):
        x = random_hflip(random_crop(x, 4))
        return mixer(cutout(x.float() / 255), y)

    compiled = torch.compile(step, fullgraph=True)
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=gen())
    y = torch.arange(8)
    for _ in range(2):
        out, y_a, y_b, lam = compiled(x, y)
        assert out.shape == x.shape and out.dtype == torch.float32 and torch.equal(y_a, y)
        assert lam.dim() == 0 and 0 <= lam.item() <= 1
