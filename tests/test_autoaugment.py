"""Batched per-image AutoAugment / RandAugment / TrivialAugmentWide against torchvision, CPU only."""
import math

import pytest
import torch
import torchvision.transforms as T
from torchvision.transforms.autoaugment import _apply_op

from autoaugment import (BatchAutoAugment, BatchRandAugment, BatchTrivialAugmentWide, apply_op,
                         build_batch_policy)

NEAREST = T.InterpolationMode.NEAREST


def random_images(b, c, h, w, seed=0):
    torch.manual_seed(seed)
    x = torch.randint(0, 256, (b, c, h, w), dtype=torch.uint8)
    # A narrow-range image and one with a constant channel exercise autocontrast/equalize edge cases.
    if b >= 3:
        x[1] = x[1] // 4 + 60
        x[2, 0] = 77
    return x


def reference(img, name, magnitude):
    return _apply_op(img, name, magnitude, interpolation=NEAREST, fill=None)


def policies():
    return [BatchAutoAugment("cifar10"), BatchAutoAugment("svhn"), BatchAutoAugment("imagenet"),
            BatchRandAugment(2, 9), BatchRandAugment(3, 25), BatchTrivialAugmentWide()]


def gen(seed):
    return torch.Generator().manual_seed(seed)


# Every op, a low and a high bin of TrivialAugmentWide's (widest) space, both signs where signed.
_SPACE = T.TrivialAugmentWide()._augmentation_space(31)
OP_CASES = [(name, s * float(mags[b]) if mags.ndim else 0.0)
            for name, (mags, signed) in _SPACE.items() for b in ((7, 30) if mags.ndim else (0,))
            for s in ((1, -1) if signed else (1,))]
OP_CASES += [("Posterize", 1.0), ("Rotate", 17.3), ("TranslateX", 9.7), ("TranslateY", -9.7)]


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("name,magnitude", OP_CASES)
def test_apply_op_matches_torchvision_per_image(name, magnitude, c):
    x = random_images(6, c, 28, 36, seed=1)
    expected = torch.stack([reference(im, name, magnitude) for im in x])
    assert torch.equal(apply_op(x, name, magnitude), expected)


@pytest.mark.parametrize("policy", policies(), ids=lambda p: type(p).__name__)
def test_call_matches_torchvision_with_drawn_params(policy):
    # Non-square so that swapping H and W in the translate magnitudes would show.
    x = random_images(48, 3, 24, 40, seed=2)
    g = gen(3)
    p = policy.draw(48, torch.Generator().set_state(g.get_state()), (24, 40))
    out = policy(x, g)
    # Magnitudes come from torchvision's own space, indexed by the drawn bin, not from our table.
    tv = policy._tv if hasattr(policy, "_tv") else T.TrivialAugmentWide(policy.num_magnitude_bins)
    nb = getattr(policy, "num_magnitude_bins", 10)
    space = tv._augmentation_space(nb) if isinstance(policy, BatchTrivialAugmentWide) \
        else tv._augmentation_space(nb, (24, 40))
    for i in range(48):
        img = x[i]
        for k in range(p["op"].shape[1]):
            if not p["applied"][i, k]:
                continue
            name = policy.op_names[p["op"][i, k]]
            mags, signed = space[name]
            m = float(mags[p["bin"][i, k]]) if mags.ndim else 0.0
            img = reference(img, name, -m if signed and p["sign"][i, k] < 0 else m)
        assert torch.equal(out[i], img), i


def within(count, n, prob, sigmas=4.0):
    return abs(count - n * prob) <= sigmas * math.sqrt(n * prob * (1 - prob)) + 1


def test_autoaugment_cifar10_frequencies():
    aa, n = BatchAutoAugment("cifar10"), 20000
    p = aa.draw(n, gen(4), (32, 32))
    subs = aa._tv.policies
    counts = torch.bincount(p["sub_policy"], minlength=len(subs))
    assert len(subs) == 25 and all(within(int(c), n, 1 / 25) for c in counts)
    for s, sub in enumerate(subs):
        rows = p["sub_policy"] == s
        for k, (name, prob, mag_id) in enumerate(sub):
            assert (p["op"][rows, k] == aa.op_names.index(name)).all()
            assert within(int(p["applied"][rows, k].sum()), int(rows.sum()), prob), (s, k)
            if mag_id is not None:
                assert (p["bin"][rows, k] == mag_id).all()
    space = aa._tv._augmentation_space(10, (32, 32))
    signed = torch.tensor([space[n_][1] for n_ in aa.op_names])[p["op"]]
    neg = p["sign"] < 0
    assert not neg[~signed].any()
    assert within(int(neg[signed].sum()), int(signed.sum()), 0.5)


def test_randaugment_frequencies():
    ra, n = BatchRandAugment(2, 9), 10000
    p = ra.draw(n, gen(5), (32, 32))
    assert p["applied"].all() and (p["bin"] == 9).all()
    counts = torch.bincount(p["op"].flatten(), minlength=len(ra.op_names))
    assert len(ra.op_names) == 14 and all(within(int(c), 2 * n, 1 / 14) for c in counts)
    space = ra._tv._augmentation_space(31, (32, 32))
    for i, name in enumerate(ra.op_names):
        mags, signed = space[name]
        sel = p["op"] == i
        expected = float(mags[9]) if mags.ndim else 0.0
        assert (p["magnitude"][sel].abs() == abs(expected)).all(), name
        neg = int((p["sign"][sel] < 0).sum())
        assert within(neg, int(sel.sum()), 0.5) if signed else neg == 0, name


def test_trivial_frequencies():
    ta, n = BatchTrivialAugmentWide(), 20000
    p = ta.draw(n, gen(6), (32, 32))
    assert all(within(int(c), n, 1 / 14) for c in torch.bincount(p["op"].flatten(), minlength=14))
    assert all(within(int(c), n, 1 / 31) for c in torch.bincount(p["bin"].flatten(), minlength=31))
    rotate = p["op"] == ta.op_names.index("Rotate")
    assert torch.equal(p["magnitude"][rotate], p["sign"][rotate] * p["bin"][rotate] * 4.5)


@pytest.mark.parametrize("policy", policies(), ids=lambda p: type(p).__name__)
def test_each_image_draws_independently(policy):
    x = random_images(1, 3, 32, 32, seed=7).expand(64, -1, -1, -1).contiguous()
    out = policy(x, gen(8))
    assert len({bytes(o.numpy()) for o in out}) >= 20


@pytest.mark.parametrize("policy", policies(), ids=lambda p: type(p).__name__)
def test_reproducible_from_generator_only(policy):
    x = random_images(32, 3, 32, 32, seed=9)
    torch.manual_seed(0)
    a = policy(x, gen(10))
    torch.manual_seed(1)  # the global RNG must not matter
    assert torch.equal(a, policy(x, gen(10)))
    assert not torch.equal(a, policy(x, gen(11)))


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 40, 40), (3, 32, 32), (1, 17, 23)])
@pytest.mark.parametrize("name", ["autoaugment-cifar10", "autoaugment-svhn", "autoaugment-imagenet",
                                  "randaugment", "trivialaugment"])
def test_shape_dtype_device_preserved_and_input_untouched(name, shape):
    x = random_images(16, *shape, seed=12)
    before = x.clone()
    out = build_batch_policy(name)(x, gen(13))
    assert out.shape == x.shape and out.dtype == torch.uint8 and out.device == x.device
    assert torch.equal(x, before) and not torch.equal(out, x)


def test_bad_input_rejected():
    with pytest.raises(ValueError):
        BatchTrivialAugmentWide()(torch.zeros(2, 3, 8, 8), gen(0))
    with pytest.raises(ValueError):
        build_batch_policy("nope")
    with pytest.raises(ValueError):
        BatchRandAugment(magnitude=31)
