"""Tests for autoaugment.py and policy_kernels.py: the original's PIL ops (the workers path) as the
reference, the batched device ops against them and against torchvision, and the device path against
the workers path (and torchvision's ops) with drawn parameters. CPU only. The draws are in
test_autoaugment_draws.py; sync-freedom and fixed op counts on the meta device, input handling and
the torch.compile check (marked slow) in test_autoaugment_meta_and_input.py."""
import pytest
import torch
import torchvision.transforms as T
from torchvision.transforms.autoaugment import _apply_op

import policy_kernels
from autoaugment import (OP_INDEX, OPS, BatchAutoAugment, BatchRandAugment, BatchTrivialAugmentWide,
                         original_op)
from autoaugment_helpers import _aa_space, from_pil, random_images, to_pil, tv_policies
from conftest import gen


# How closely the batched "original" ops reproduce PIL, per op: bit for bit, or within one grey
# level. An op listed as exact fails its test at the first differing pixel.
EXACT = frozenset(OPS[1:])
WITHIN_ONE = frozenset()
TOLERANCE = {**{op: 0 for op in EXACT}, **{op: 1 for op in WITHIN_ONE}, "Identity": 0}

NEAREST = T.InterpolationMode.NEAREST
SHAPES = [(3, 32, 32), (3, 24, 40), (1, 17, 23)]  # CIFAR, non-square (H/W swaps show), odd and grey


def test_tolerance_table_covers_every_op_once():
    assert EXACT | WITHIN_ONE == set(OPS[1:]) and not EXACT & WITHIN_ONE


def forced(n, slots, op, bins, signs):
    """Params putting `op` (an OPS index per image) in slot 0 and leaving the other slots off."""
    p = {"op": torch.zeros(n, slots, dtype=torch.long), "bin": torch.zeros(n, slots, dtype=torch.long),
         "sign": torch.ones(n, slots, dtype=torch.long), "applied": torch.zeros(n, slots, dtype=torch.bool)}
    p["op"][:, 0], p["bin"][:, 0], p["sign"][:, 0], p["applied"][:, 0] = op, bins, signs, True
    return p


def space_cases(bins, signed):
    return [(b, s) for b in bins for s in ((1, -1) if signed else (1,))]


def compare(out, ref):
    diff = (out.int() - ref.int()).abs()
    return int(diff.max()), int((diff > 0).sum())


# ---------------------------------------------------------------- 1. parity with the original (PIL)

ORIGINAL_CASES = {name: space_cases(range(10) if name in policy_kernels.ORIGINAL_RANGES else [0], name in policy_kernels.ORIGINAL_SIGNED)
                  for name in OPS[1:]}


@pytest.fixture(scope="module")
def all_ops_original():
    """The batched original semantics with every op drawable in one slot (a policy's slots can draw
    only their table's ops), so each op can be forced at every bin and sign."""
    return policy_kernels.OriginalKernel([set(OPS)])


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", OPS[1:])
def test_batched_original_ops_match_pil(all_ops_original, name, shape):
    x = random_images(7, *shape, seed=sum(shape))
    cases = ORIGINAL_CASES[name]
    images = x.repeat(len(cases), 1, 1, 1)  # every image at every (bin, sign), in one batch
    bins = torch.tensor([b for b, _ in cases]).repeat_interleave(len(x))
    signs = torch.tensor([s for _, s in cases]).repeat_interleave(len(x))
    n = len(images)
    p = forced(n, 1, OP_INDEX[name], bins, signs)
    out = all_ops_original.apply(images, p["op"], p["bin"], p["sign"], p["applied"])
    ref = torch.stack([from_pil(original_op(to_pil(im), name, int(b), int(s)))
                       for im, b, s in zip(images, bins, signs)])
    worst, count = compare(out, ref)
    assert worst <= TOLERANCE[name], f"{name}: max diff {worst} over {count} pixels (declared {TOLERANCE[name]})"


def test_original_op_names_and_arguments():
    img = to_pil(random_images(1, 3, 8, 8)[0])
    assert from_pil(original_op(img, "shearX", 4, -1)).equal(from_pil(original_op(img, "ShearX", 4, -1)))
    for bad in [("Nope", 0, 1), ("Rotate", 10, 1), ("Rotate", 0, 0)]:
        with pytest.raises(ValueError):
            original_op(img, *bad)
    with pytest.raises(ValueError):
        original_op(img.convert("RGBA"), "Invert", 0, 1)


def test_original_translate_rounds_and_rotate_turns_counter_clockwise():
    # PIL samples pixel centres: 150/331 * 32 = 14.5 px becomes a 15 px shift (torchvision: 14).
    x = torch.zeros(1, 32, 32, dtype=torch.uint8)
    x[0, :, 20] = 255
    out = from_pil(original_op(to_pil(x), "TranslateX", 9, 1))
    assert out[0, 0, 5] == 255 and out[0, 0, :17].sum() == 255 and (out[0, 0, 17:] == 128).all()
    # A bright spot right of the centre moves up (y grows downwards) for every sign: never clockwise.
    y = torch.zeros(1, 32, 32, dtype=torch.uint8)
    y[0, 16, 28] = 255
    for sign in (1, -1):
        rows, cols = (from_pil(original_op(to_pil(y), "Rotate", 9, sign))[0] == 255).nonzero(as_tuple=True)
        assert rows.tolist() == [10] and cols.tolist() == [27]  # (12.5, 0.5) from the centre, turned 30 degrees


# ---------------------------------------------------------------- 2. parity with torchvision

def _tv_case(policy, space_at, name, bins, shape, seed, kernel=None):
    x = random_images(7, *shape, seed=seed)
    mags, signed = space_at(shape[1:])[name]
    cases = space_cases(bins if mags.ndim else [0], signed)
    images = x.repeat(len(cases), 1, 1, 1)
    bins_t = torch.tensor([b for b, _ in cases]).repeat_interleave(len(x))
    signs_t = torch.tensor([s for _, s in cases]).repeat_interleave(len(x))
    p = forced(len(images), policy.num_slots if policy else 1, OP_INDEX[name], bins_t, signs_t)
    if kernel is not None:
        out = kernel.apply(images, p["op"], p["bin"], p["sign"], p["applied"])
    else:
        out = policy.apply(images, p)
    refs = []
    for im, b, s in zip(images, bins_t.tolist(), signs_t.tolist()):
        m = float(mags[b]) if mags.ndim else 0.0
        refs.append(_apply_op(im, name, -m if signed and s < 0 else m, interpolation=NEAREST, fill=None))
    return compare(out, torch.stack(refs))


@pytest.fixture(scope="module")
def all_ops_torchvision():
    space = _aa_space((32, 32))
    return policy_kernels.TorchvisionKernel(10, [set(space)], space, policy_kernels.TRANSLATE_FRACTION)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", list(_aa_space((32, 32))))
def test_torchvision_autoaugment_ops_match_apply_op(all_ops_torchvision, name, shape):
    worst, count = _tv_case(None, _aa_space, name, range(10), shape, seed=sum(shape), kernel=all_ops_torchvision)
    assert worst == 0, f"{name}: max diff {worst} over {count} pixels"


@pytest.mark.parametrize("shape", SHAPES[:2], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kind", ["randaugment", "trivialaugment"])
def test_randaugment_and_trivialaugment_ops_match_apply_op(kind, shape):
    if kind == "randaugment":
        policy, bins = BatchRandAugment(2, 9), [0, 9, 17, 30]
        space_at = lambda size: T.RandAugment()._augmentation_space(31, size)  # noqa: E731
    else:
        policy, bins = BatchTrivialAugmentWide(), [0, 5, 13, 30]
        space_at = lambda size: T.TrivialAugmentWide()._augmentation_space(31)  # noqa: E731
    bad = {}
    for name in policy.op_names:
        worst, count = _tv_case(policy, space_at, name, bins, shape, seed=7)
        if worst:
            bad[name] = (worst, count)
    assert not bad


# ---------------------------------------------------------------- 4. device path == workers path

@pytest.mark.parametrize("policy,shape", [("cifar10", (3, 32, 32)), ("svhn", (3, 32, 32)), ("svhn", (1, 28, 28))])
def test_device_path_equals_workers_path(policy, shape):
    x = random_images(64, *shape, seed=8)
    aug = BatchAutoAugment(policy)
    p = aug.draw(64, "cpu", gen(9))
    out = aug.apply(x, p)
    for i in range(64):
        img, tol = to_pil(x[i]), 0
        for k in range(2):
            if p["applied"][i, k]:
                name = OPS[p["op"][i, k]]
                img = original_op(img, name, int(p["bin"][i, k]), int(p["sign"][i, k]))
                tol += TOLERANCE[name]
        assert compare(out[i], from_pil(img))[0] <= tol, i
    assert p["applied"].any(1).float().mean() > 0.5


@pytest.mark.parametrize("policy", tv_policies(), ids=repr)
def test_torchvision_policies_match_apply_op_with_drawn_params(policy):
    x = random_images(48, 3, 24, 40, seed=2)
    p = policy.draw(48, "cpu", gen(3))
    out = policy.apply(x, p)
    if isinstance(policy, BatchTrivialAugmentWide):
        space = T.TrivialAugmentWide()._augmentation_space(31)
    elif isinstance(policy, BatchRandAugment):
        space = T.RandAugment()._augmentation_space(policy.num_magnitude_bins, (24, 40))
    else:
        space = _aa_space((24, 40))
    for i in range(48):
        img = x[i]
        for k in range(p["op"].shape[1]):
            if p["applied"][i, k]:
                name = OPS[p["op"][i, k]]
                mags, signed = space[name]
                m = float(mags[p["bin"][i, k]]) if mags.ndim else 0.0
                m = -m if signed and p["sign"][i, k] < 0 else m
                img = _apply_op(img, name, m, interpolation=NEAREST, fill=None)
        assert torch.equal(out[i], img), i
