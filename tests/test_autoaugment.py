"""Tests for autoaugment.py and policy_kernels.py: the original's PIL ops (the workers path) as the
reference, the batched device ops against them and against torchvision, the draws, sync-freedom and
fixed op counts on the meta device, and input handling. CPU only; the torch.compile check is marked slow."""
import math

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image
from torchvision.transforms.autoaugment import _apply_op

import autoaugment as aa
import policy_kernels
from autoaugment import (OP_INDEX, OPS, BatchAutoAugment, BatchRandAugment, BatchTrivialAugmentWide,
                         OriginalAutoAugment, count_ops, original_op)

# How closely the batched "original" ops reproduce PIL, per op: bit for bit, or within one grey
# level. An op listed as exact fails its test at the first differing pixel.
EXACT = frozenset(OPS[1:])
WITHIN_ONE = frozenset()
TOLERANCE = {**{op: 0 for op in EXACT}, **{op: 1 for op in WITHIN_ONE}, "Identity": 0}

NEAREST = T.InterpolationMode.NEAREST
SHAPES = [(3, 32, 32), (3, 24, 40), (1, 17, 23)]  # CIFAR, non-square (H/W swaps show), odd and grey


def test_tolerance_table_covers_every_op_once():
    assert EXACT | WITHIN_ONE == set(OPS[1:]) and not EXACT & WITHIN_ONE


def random_images(b, c, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (b, c, h, w), dtype=torch.uint8, generator=g)
    if b >= 7:
        x[1] = x[1] // 4 + 60  # narrow range: autocontrast stretches, contrast's mean moves
        x[2, 0] = 77  # a constant channel: autocontrast and equalize leave it
        x[3] = torch.where(x[3] > 100, 250, x[3])  # a dominant top level: equalize's LUT passes 255
        x[4] = ((torch.arange(h)[:, None] + torch.arange(w)) % 2 * 255).to(torch.uint8)  # cubic over/undershoot
        x[5] = 200  # constant image
        ramp = torch.arange(h)[:, None] * 7 + torch.arange(w) * 3
        x[6] = (ramp % 256).to(torch.uint8)  # smooth: interpolation fractions matter
    return x


def to_pil(t):
    a = t.permute(1, 2, 0).numpy()
    return Image.fromarray(a[:, :, 0], "L") if a.shape[2] == 1 else Image.fromarray(a, "RGB")


def from_pil(img):
    a = np.asarray(img)
    return torch.from_numpy((a[:, :, None] if a.ndim == 2 else a).copy()).permute(2, 0, 1)


def gen(seed):
    return torch.Generator().manual_seed(seed)


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


def _aa_space(size):
    return T.AutoAugment()._augmentation_space(10, size)


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


# ---------------------------------------------------------------- 3. draws

def within(count, n, prob, sigmas=4.0):
    return abs(count - n * prob) <= sigmas * math.sqrt(n * prob * (1 - prob)) + 1


def check_autoaugment_draws(subs, sub, applied, sign, signed_ops):
    """Sub-policies uniform, op k applied with its probability, signs fair where signed, +1 elsewhere."""
    n = len(sub)
    counts = torch.bincount(sub, minlength=len(subs))
    assert len(subs) == 25 and all(within(int(c), n, 1 / 25) for c in counts)
    for s, sp in enumerate(subs):
        rows = sub == s
        for k, (_, prob, _) in enumerate(sp):
            assert within(int(applied[rows, k].sum()), int(rows.sum()), prob), (s, k)
    is_signed = torch.tensor([[sp[k][0] in signed_ops for k in range(2)] for sp in subs])[sub]
    neg = sign < 0
    assert within(int(neg[is_signed].sum()), int(is_signed.sum()), 0.5)
    return neg, is_signed


@pytest.mark.parametrize("policy", ["cifar10", "svhn"])
def test_original_autoaugment_draw_frequencies(policy):
    aug = OriginalAutoAugment(policy)
    torch.manual_seed(0)
    draws = [aug.draw() for _ in range(10000)]
    sub = torch.tensor([d["sub_policy"] for d in draws])
    applied = torch.tensor([d["applied"] for d in draws])
    sign = torch.tensor([d["sign"] for d in draws])
    subs = [[(aa._canonical(nm), p, b) for nm, p, b in sp] for sp in aa._policy_table(policy)]
    check_autoaugment_draws(subs, sub, applied, sign, policy_kernels.ORIGINAL_SIGNED)


def test_original_autoaugment_applies_what_it_draws(monkeypatch):
    aug, calls = OriginalAutoAugment("cifar10"), []
    monkeypatch.setattr(aa, "original_op", lambda img, name, b, s: calls.append((name, b, s)) or img)
    img = to_pil(random_images(1, 3, 4, 4)[0])
    torch.manual_seed(1)
    for _ in range(200):
        aug(img)
    torch.manual_seed(1)
    expected = []
    for _ in range(200):
        d = aug.draw()
        sub = aug.sub_policies[d["sub_policy"]]
        expected += [(name, b, s) for (name, _, b), on, s in zip(sub, d["applied"], d["sign"]) if on]
    assert calls == expected and len(calls) > 100


def test_original_autoaugment_is_reproducible_from_the_global_rng():
    aug, img = OriginalAutoAugment("svhn"), to_pil(random_images(1, 3, 32, 32, seed=3)[0])
    torch.manual_seed(5)
    a = [from_pil(aug(img)) for _ in range(20)]
    torch.manual_seed(5)
    assert all(t.equal(from_pil(aug(img))) for t in a)


@pytest.mark.parametrize("ops", ["original", "torchvision"])
@pytest.mark.parametrize("policy", ["cifar10", "svhn"])
def test_batched_autoaugment_draw_frequencies(policy, ops):
    aug = BatchAutoAugment(policy, ops=ops)
    p = aug.draw(20000, "cpu", gen(4))
    subs = aa._policy_table(policy)
    for s, sp in enumerate(subs):
        rows = p["sub_policy"] == s
        for k, (name, _, b) in enumerate(sp):
            assert (p["op"][rows, k] == OP_INDEX[name]).all() and (p["bin"][rows, k] == (b or 0)).all()
    signed = policy_kernels.ORIGINAL_SIGNED if ops == "original" else {n for n, (_, sg) in _aa_space((32, 32)).items() if sg}
    neg, is_signed = check_autoaugment_draws(subs, p["sub_policy"], p["applied"], p["sign"], signed)
    assert not neg[~is_signed].any()
    rotate = p["op"] == OP_INDEX["Rotate"]
    if ops == "original":
        assert rotate.any() and (p["sign"][rotate] == 1).all()  # the original never turns clockwise
    else:
        assert within(int((p["sign"][rotate] < 0).sum()), int(rotate.sum()), 0.5)


def test_randaugment_and_trivialaugment_draw_frequencies():
    ra, n = BatchRandAugment(2, 9), 10000
    p = ra.draw(n, "cpu", gen(5))
    assert p["applied"].all() and (p["bin"] == 9).all()
    counts = torch.bincount(p["op"].flatten(), minlength=len(OPS))
    assert len(ra.op_names) == 14 and all(within(int(counts[OP_INDEX[o]]), 2 * n, 1 / 14) for o in ra.op_names)
    assert counts[OP_INDEX["Invert"]] == 0
    ta = BatchTrivialAugmentWide()
    p = ta.draw(20000, "cpu", gen(6))
    counts = torch.bincount(p["op"].flatten(), minlength=len(OPS))
    assert all(within(int(counts[OP_INDEX[o]]), 20000, 1 / 14) for o in ta.op_names)
    assert all(within(int(c), 20000, 1 / 31) for c in torch.bincount(p["bin"].flatten(), minlength=31))
    for policy, p in ((ra, ra.draw(n, "cpu", gen(7))), (ta, p)):
        space = T.TrivialAugmentWide()._augmentation_space(31)
        for name in policy.op_names:
            sel = p["op"] == OP_INDEX[name]
            neg = int((p["sign"][sel] < 0).sum())
            assert within(neg, int(sel.sum()), 0.5) if space[name][1] else neg == 0, name


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


def tv_policies():
    return [BatchAutoAugment("cifar10", ops="torchvision"), BatchAutoAugment("svhn", ops="torchvision"),
            BatchRandAugment(2, 9), BatchRandAugment(3, 25), BatchTrivialAugmentWide()]


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


# ---------------------------------------------------------------- 5. sync-free, fixed op count

def all_policies():
    return [BatchAutoAugment("cifar10"), BatchAutoAugment("svhn")] + tv_policies()


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("policy", all_policies(), ids=repr)
def test_fixed_op_count_and_no_syncs_on_meta(policy, shape):
    small, large = count_ops(policy, 8, shape), count_ops(policy, 256, shape)
    assert small["by_op"] == large["by_op"] and small["ops"] == large["ops"] > 50
    for counts in (small, large):
        assert counts["syncs"] == 0 and counts["blocking_copies"] == 0
        assert not {"nonzero", "_local_scalar_dense", "_unique2", "masked_select"} & set(counts["by_op"])


class _Syncing:
    """Negative controls for count_ops: one policy reads a device value, one copies a host table."""

    def __init__(self, kind):
        self.kind = kind

    def to(self, device):
        return self

    def __call__(self, images):
        if self.kind == "sync":
            return images + int(images.sum())
        return images + torch.tensor([1, 2, 3], dtype=torch.uint8).to(images.device)[0]


def test_count_ops_detects_syncs_and_host_copies():
    assert count_ops(_Syncing("sync"), 4, device="cpu")["syncs"] == 1
    assert count_ops(_Syncing("copy"), 4)["blocking_copies"] == 1


def test_to_moves_tables_once_and_returns_self():
    policy = BatchAutoAugment("cifar10")
    assert policy.to("meta") is policy
    assert policy._op.device.type == "meta" and policy.kernel.static_lut.device.type == "meta"
    assert policy.kernel.geo[0]["rot_m"].device.type == "meta"


# ---------------------------------------------------------------- 6. input handling

@pytest.mark.parametrize("policy", all_policies(), ids=repr)
def test_bad_input_rejected(policy):
    u8 = torch.uint8
    for bad in (torch.zeros(2, 3, 8, 8), torch.zeros(3, 8, 8, dtype=u8), torch.zeros(2, 2, 8, 8, dtype=u8)):
        with pytest.raises(ValueError):
            policy(bad)
    with pytest.raises(ValueError):
        policy.apply(torch.zeros(2, 3, 8, 8, dtype=torch.int16), policy.draw(2, "cpu"))


def test_bad_arguments_rejected():
    for make in (lambda: BatchAutoAugment("imagenet"), lambda: BatchAutoAugment(ops="pil"),
                 lambda: BatchRandAugment(magnitude=31), lambda: OriginalAutoAugment("nope")):
        with pytest.raises(ValueError):
            make()


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 40, 40), (3, 32, 32), (1, 17, 23)])
@pytest.mark.parametrize("policy", all_policies(), ids=repr)
def test_shape_dtype_device_preserved_and_input_untouched(policy, shape):
    x = random_images(16, *shape, seed=12)
    before = x.clone()
    out = policy(x, gen(13))
    assert out.shape == x.shape and out.dtype == torch.uint8 and out.device == x.device
    assert torch.equal(x, before) and not torch.equal(out, x)


@pytest.mark.parametrize("policy", all_policies(), ids=repr)
def test_each_image_draws_independently(policy):
    x = random_images(1, 3, 32, 32, seed=7).expand(64, -1, -1, -1).contiguous()
    out = policy(x, gen(8))
    assert len({bytes(o.numpy()) for o in out}) >= 20


@pytest.mark.parametrize("policy", all_policies(), ids=repr)
def test_reproducible_from_the_generator_or_the_global_rng(policy):
    x = random_images(32, 3, 32, 32, seed=9)
    torch.manual_seed(0)
    a = policy(x, gen(10))
    torch.manual_seed(1)  # an explicit generator makes the global RNG irrelevant
    assert torch.equal(a, policy(x, gen(10)))
    assert not torch.equal(a, policy(x, gen(11)))
    torch.manual_seed(2)
    b = policy(x)  # no generator: the device's global RNG, which the trainer reseeds
    torch.manual_seed(2)
    assert torch.equal(b, policy(x))


# ---------------------------------------------------------------- torch.compile

@pytest.mark.slow
@pytest.mark.parametrize("policy", [BatchAutoAugment("cifar10"), BatchAutoAugment("svhn"), BatchTrivialAugmentWide()],
                         ids=repr)
def test_compiled_apply_equals_eager(policy):
    x = random_images(16, 3, 32, 32, seed=14)
    compiled = torch.compile(lambda images, params: policy.apply(images, params), fullgraph=True)
    for seed in (15, 16):
        p = policy.draw(16, "cpu", gen(seed))
        assert torch.equal(compiled(x, p), policy.apply(x, p))
