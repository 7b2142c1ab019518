"""Tests for timm_augment.py / timm_kernels.py: timm's RandAugment ("rand-m9-mstd0.5-inc1") on both
input paths. timm's own functions are the reference: each batched op against timm's AugmentOp at
several magnitudes, both signs and both interpolations; the draws against timm's stated semantics
(and the workers path's draws, recorded from timm itself); the whole device policy against timm's
RandAugment replayed with the same parameters; sync-freedom and a fixed op count on the meta device.
CPU only; the torch.compile check is marked slow."""
import math
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

pytest.importorskip("timm")
import timm.data.auto_augment as taa  # noqa: E402

import timm_augment as ta  # noqa: E402
import timm_kernels  # noqa: E402
from augment import build_policy  # noqa: E402
from autoaugment import count_ops  # noqa: E402
from autoaugment_helpers import check_batch_policy_contract, from_pil, random_images, to_pil, within  # noqa: E402
from conftest import gen  # noqa: E402
from utils import UserError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread_module")

# How closely each batched op reproduces timm's PIL op: bit for bit, or within one grey level.
# An op listed as exact fails its test at the first differing pixel.
EXACT = frozenset(ta.OPS[1:])
WITHIN_ONE = frozenset()
TOLERANCE = {**{op: 0 for op in EXACT}, **{op: 1 for op in WITHIN_ONE}, "Identity": 0}

C10_MEAN = (0.4914, 0.4822, 0.4465)
FILL = ta.fill_color(C10_MEAN)
SHAPES = [(3, 32, 32), (3, 24, 40), (1, 17, 23)]  # CIFAR, non-square, odd and grey
BILINEAR, BICUBIC = Image.Resampling.BILINEAR, Image.Resampling.BICUBIC
# Integer-level boundaries (2.5: posterize 1.0, 5: solarize 128), the ends, and arbitrary values.
MAGNITUDES = [0.0, 1.37, 2.5, 5.0, 7.5, 8.6314159, 9.0, 9.4817, 10.0]


def test_tolerance_table_covers_every_op_once():
    assert EXACT | WITHIN_ONE == set(ta.OPS[1:]) and not EXACT & WITHIN_ONE


# ---------------------------------------------------------------- 0. the semantics are timm's

def test_op_lists_signs_and_constants_are_timms(monkeypatch):
    assert ta.RAND_OPS == tuple(taa._RAND_TRANSFORMS)
    assert ta.RAND_INCREASING_OPS == tuple(taa._RAND_INCREASING_TRANSFORMS)
    assert ta.LEVEL_DENOM == taa._LEVEL_DENOM and ta.FILL == taa._FILL
    assert taa._RANDOM_INTERPOLATION == (BILINEAR, BICUBIC)
    negated = []
    monkeypatch.setattr(taa, "_randomly_negate", lambda v: negated.append(v) or v)
    for name in ta.OPS[1:]:
        negated.clear()
        if taa.LEVEL_TO_ARG[name] is not None:
            taa.LEVEL_TO_ARG[name](5.0, {"translate_const": 14})
        assert bool(negated) == (name in ta.SIGNED), name


def test_create_transform_passes_what_the_policy_uses():
    # timm's train transform for the CCT config: img_mean fill from the mean, random interpolation.
    from timm.data import create_transform
    tf = create_transform(32, is_training=True, auto_augment="rand-m9-mstd0.5-inc1", interpolation="random",
                          mean=C10_MEAN, std=(0.247, 0.2435, 0.2616))
    ra = [t for t in tf.transforms if isinstance(t, taa.RandAugment)]
    assert len(ra) == 1 and ra[0].num_layers == 2 and ra[0].choice_weights is None
    ours = ta.TimmRandAugment(fill=FILL).transforms["RGB"]
    assert [o.name for o in ra[0].ops] == [o.name for o in ours.ops] == list(ta.RAND_INCREASING_OPS)
    for theirs, mine in zip(ra[0].ops, ours.ops):
        assert theirs.kwargs == mine.kwargs == {"fillcolor": (125, 123, 114), "resample": taa._RANDOM_INTERPOLATION}
        assert (theirs.prob, theirs.magnitude, theirs.magnitude_std, theirs.magnitude_max) == \
               (mine.prob, mine.magnitude, mine.magnitude_std, mine.magnitude_max) == (0.5, 9, 0.5, None)
        assert "translate_pct" not in theirs.hparams
    assert ta.fill_color((0.5071, 0.4867, 0.4408)) == (129, 124, 112) and ta.fill_color() == (128, 128, 128)


@pytest.mark.parametrize("config", ["rand-m9-mstd0.5-inc1", "rand-m7-n3-p0.3-mstd101", "rand-m10-n1",
                                    "rand-m5-mstd0-inc0", "rand-n4-m2-mstd1.5-p1.0-inc1"])
def test_config_strings_read_as_timm_reads_them(config):
    kw = ta.parse_config(config)
    for text in (config, ta.config_string(**kw)):
        t = taa.rand_augment_transform(text, {})
        assert t.num_layers == kw["num_ops"]
        assert [o.name for o in t.ops] == list(ta.RAND_INCREASING_OPS if kw["increasing"] else ta.RAND_OPS)
        for o in t.ops:
            assert (o.prob, o.magnitude, o.magnitude_std) == (kw["prob"], kw["magnitude"], kw["magnitude_std"])
    for bad in ("auto-m9", "rand-m9-tweights", "rand-m9-mmax20"):
        with pytest.raises(ValueError):
            ta.parse_config(bad)


# ---------------------------------------------------------------- 1. every op against timm's op

def timm_op(img, name, magnitude, sign, bicubic, monkeypatch):
    """timm's AugmentOp (prob 1, no magnitude noise) at this magnitude, sign and interpolation."""
    monkeypatch.setattr(taa, "_randomly_negate", lambda v: -v if sign < 0 else v)
    fill = FILL if img.mode == "RGB" else FILL[:1]
    hparams = {"translate_const": 14, "img_mean": fill, "interpolation": BICUBIC if bicubic else BILINEAR}
    op = taa.AugmentOp(name, prob=1.0, magnitude=magnitude, hparams=hparams)
    if op.aug_fn is taa.posterize:
        op.aug_fn = ta.posterize  # as the workers path does (next test)
    return op(img)


def test_posterize_keeps_zero_bits_as_timms_pillow_did():
    img = to_pil(random_images(7, 3, 8, 8)[0])
    for bits in range(1, 9):
        assert from_pil(ta.posterize(img, bits)).equal(from_pil(taa.posterize(img, bits)))
    assert (from_pil(ta.posterize(img, 0)) == 0).all() and (from_pil(ta.posterize(img.convert("L"), 0)) == 0).all()
    with pytest.raises(ValueError):  # why: today's Pillow refuses what timm asks for at magnitude 10
        taa.AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=10)(img)
    pil = ta.TimmRandAugment()
    assert all(op.aug_fn is ta.posterize for t in pil.transforms.values() for op in t.ops if "Posterize" in op.name)


@pytest.fixture(scope="module")
def one_slot():
    return ta.BatchTimmRandAugment(num_ops=1, fill=FILL)


def forced(n, op, magnitude, sign, bicubic):
    return {"op": torch.full((n, 1), ta.OP_INDEX[op]), "applied": torch.ones(n, 1, dtype=torch.bool),
            "magnitude": magnitude.view(n, 1).double(), "sign": sign.view(n, 1).double(),
            "bicubic": bicubic.view(n, 1)}


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", ta.OPS[1:])
def test_batched_ops_match_timm(one_slot, name, shape, monkeypatch):
    x = random_images(7, *shape, seed=sum(shape))
    signs = (1.0, -1.0) if name in ta.SIGNED else (1.0,)
    interps = (False, True) if name in ta.GEOMETRY else (False,)
    cases = [(m, s, b) for m in MAGNITUDES for s in signs for b in interps]
    images = x.repeat(len(cases), 1, 1, 1)
    mags, sgn, bic = (torch.tensor([c[i] for c in cases]).repeat_interleave(len(x)) for i in range(3))
    out = one_slot.apply(images, forced(len(images), name, mags, sgn, bic))
    bad, worst = 0, 0
    for im, o, m, s, b in zip(images, out, mags.tolist(), sgn.tolist(), bic.tolist()):
        ref = from_pil(timm_op(to_pil(im), name, m, s, b, monkeypatch))
        diff = int((o.int() - ref.int()).abs().max())
        worst, bad = max(worst, diff), bad + (diff > 0)
    assert worst <= TOLERANCE[name], f"{name}: max diff {worst} in {bad} of {len(images)} images"


def test_round15_is_pythons_round():
    g = gen(0)
    v = torch.cat([torch.rand(20000, dtype=torch.float64, generator=g) * 2 - 1,
                   torch.cos(torch.rand(20000, dtype=torch.float64, generator=g)),
                   torch.tensor([0.0, -0.0, 1.0, -1.0, 0.5e-15, 1.5e-15, 2.5e-15, -2.5e-15])])
    ref = torch.tensor([round(a, 15) for a in v.tolist()], dtype=torch.float64)
    out = timm_kernels.round15(v)
    assert torch.equal(out, ref) and torch.equal(torch.signbit(out), torch.signbit(ref))
    assert (torch.round(v * 1e15) / 1e15 != ref).any()  # the naive rounding would not do


# ---------------------------------------------------------------- 2. draws

def test_device_draws_follow_timms_semantics():
    policy, n = ta.BatchTimmRandAugment(fill=FILL), 20000
    p = policy.draw(n, "cpu", gen(1))
    names = policy.op_names
    for k in range(2):  # uniform over the 15 ops, in each slot
        counts = torch.bincount(p["op"][:, k], minlength=len(ta.OPS))
        assert all(within(int(counts[ta.OP_INDEX[o]]), n, 1 / 15) for o in names)
        assert int(counts.sum()) == n and within(int(p["applied"][:, k].sum()), n, 0.5)  # p = 0.5
    assert within(int((p["op"][:, 0] == p["op"][:, 1]).sum()), n, 1 / 15)  # with replacement
    m = p["magnitude"]
    assert m.dtype == torch.float64 and (m >= 0).all() and (m <= 10).all()
    ref = clipped_gauss(9, 0.5)
    assert abs(m.mean() - ref.mean()) < 0.01 and abs(m.std() - ref.std()) < 0.01
    assert within(int((m == 10).sum()), m.numel(), float((ref == 10).double().mean()))  # ~2.3% clipped
    signed = torch.tensor([ta.OPS[i] in ta.SIGNED for i in range(len(ta.OPS))])[p["op"]]
    assert within(int((p["sign"][signed] < 0).sum()), int(signed.sum()), 0.5)
    assert (p["sign"][~signed] == 1).all()
    assert within(int(p["bicubic"].sum()), p["bicubic"].numel(), 0.5)


def test_device_draws_other_settings():
    p = ta.BatchTimmRandAugment(3, 6, math.inf, 1.0, increasing=False).draw(20000, "cpu", gen(2))
    assert p["op"].shape == (20000, 3) and p["applied"].all()
    assert abs(p["magnitude"].mean() - 3) < 0.05 and p["magnitude"].max() <= 6  # uniform(0, 6)
    assert set(p["op"].unique().tolist()) == {ta.OP_INDEX[o] for o in ta.RAND_OPS}
    p = ta.BatchTimmRandAugment(2, 7, 0.0, 0.2, interpolation="bicubic").draw(5000, "cpu", gen(3))
    assert (p["magnitude"] == 7).all() and p["bicubic"].all() and within(int(p["applied"].sum()), 10000, 0.2)
    assert ta.BatchTimmRandAugment(magnitude_std=150).magnitude_std == math.inf  # timm: mstd > 100 is uniform


def clipped_gauss(mean, std, n=100000):
    """Python's gauss(mean, std) clipped to [0, 10], as timm draws a magnitude."""
    rng = random.Random(0)
    return torch.tensor([max(0.0, min(rng.gauss(mean, std), 10.0)) for _ in range(n)], dtype=torch.float64)


def test_workers_path_draws_are_timms(monkeypatch):
    """What timm's own transform applies, recorded from timm: op choice, p = 0.5, magnitude noise,
    signs, interpolation."""
    pil = ta.TimmRandAugment(fill=FILL)
    calls, chosen = [], []
    for op in pil.transforms["RGB"].ops:
        fn, level = op.aug_fn, op.level_fn
        op.aug_fn = lambda img, *args, _name=op.name, _fn=fn, **kw: calls.append((_name, args)) or _fn(img, *args, **kw)
        if level is not None:
            op.level_fn = lambda m, h, _level=level: calls.append(("magnitude", m)) or _level(m, h)
    interpolation = taa._interpolation
    monkeypatch.setattr(taa, "_interpolation", lambda kw: chosen.append(interpolation(kw)) or chosen[-1])
    img, n = to_pil(random_images(7, 3, 4, 4)[0]), 3000
    torch.manual_seed(0)
    for _ in range(n):
        pil(img)
    ops = [c for c in calls if c[0] != "magnitude"]
    assert within(len(ops), 2 * n, 0.5)
    counts = {name: sum(c[0] == name for c in ops) for name in ta.RAND_INCREASING_OPS}
    assert all(within(c, len(ops), 1 / 15) for c in counts.values())
    mags, ref = torch.tensor([c[1] for c in calls if c[0] == "magnitude"]), clipped_gauss(9, 0.5)
    assert abs(mags.mean() - ref.mean()) < 0.03 and abs(mags.std() - ref.std()) < 0.03 and mags.max() == 10
    rot = torch.tensor([c[1][0] for c in ops if c[0] == "Rotate"])
    assert within(int((rot < 0).sum()), len(rot), 0.5) and rot.abs().max() <= 30
    assert len(chosen) == sum(c[0] in ta.GEOMETRY for c in ops) and set(chosen) == {BILINEAR, BICUBIC}
    assert within(sum(r == BICUBIC for r in chosen), len(chosen), 0.5)


def test_workers_path_is_reproducible_from_torchs_rng_and_leaves_the_others_alone():
    pil, img = ta.TimmRandAugment(fill=FILL), to_pil(random_images(7, 3, 32, 32, seed=3)[6])
    random.seed(1)
    np.random.seed(1)
    before = random.random(), np.random.rand()
    torch.manual_seed(5)
    a = [from_pil(pil(img)) for _ in range(20)]
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(5)
    b = [from_pil(pil(img)) for _ in range(20)]
    assert all(x.equal(y) for x, y in zip(a, b)) and len({bytes(x.numpy()) for x in a}) > 5
    assert (random.random(), np.random.rand()) == before  # their states were restored
    # In the loader: an image's result depends only on its (image, seed) pair.
    from loaders import _UInt8Dataset
    ds = _UInt8Dataset(random_images(7, 3, 32, 32), torch.arange(7), T.Compose([pil, T.PILToTensor()]))
    assert ds[(6, 11)][0].equal(ds[(6, 11)][0]) and not ds[(6, 11)][0].equal(ds[(6, 12)][0])


# ---------------------------------------------------------------- 3. device path == workers path

class ScriptedRandom:
    """Stands in for timm's `random` (and, through `.np`, numpy): answers timm's calls, in the order
    timm makes them, with the parameters the device drew for one image, and checks that order."""

    def __init__(self, params, i, policy):
        self.events, self.picks = [], []
        for k in range(policy.num_slots):
            name = ta.OPS[int(params["op"][i, k])]
            self.picks.append(policy.op_names.index(name))
            if policy.prob < 1:
                self.events.append(("random", 0.0 if params["applied"][i, k] else 0.999))
            if not params["applied"][i, k]:
                continue
            if policy.magnitude_std > 0:
                kind = "uniform" if math.isinf(policy.magnitude_std) else "gauss"
                self.events.append((kind, float(params["magnitude"][i, k])))
            if name in ta.SIGNED:
                self.events.append(("random", 0.75 if params["sign"][i, k] < 0 else 0.25))
            if name in ta.GEOMETRY and policy.interpolation == "random":
                self.events.append(("choice", int(params["bicubic"][i, k])))
        self.np = SimpleNamespace(random=SimpleNamespace(choice=self._np_choice))

    def _next(self, kind):
        got, value = self.events.pop(0)
        assert got == kind, (got, kind)
        return value

    def _np_choice(self, ops, size, replace=True, p=None):
        assert replace and p is None and size == len(self.picks)
        return [ops[j] for j in self.picks]

    def choice(self, seq):
        return seq[self._next("choice")]

    def random(self):
        return self._next("random")

    def gauss(self, mu, sigma):
        return self._next("gauss")

    def uniform(self, a, b):
        return self._next("uniform")


@pytest.mark.parametrize("kw,shape", [({}, (3, 32, 32)), ({}, (1, 17, 23)),
                                      (dict(num_ops=3, magnitude=6, magnitude_std=math.inf, prob=1.0,
                                            increasing=False), (3, 24, 40)),
                                      (dict(magnitude=10, magnitude_std=1.0, interpolation="bilinear"), (3, 32, 32))],
                         ids=["m9-mstd0.5-inc1", "grey", "n3-m6-uniform-p1-inc0", "m10-mstd1-bilinear"])
def test_device_path_equals_timm_with_the_same_draws(kw, shape, monkeypatch):
    policy = ta.BatchTimmRandAugment(fill=FILL, **kw)
    pil = ta.TimmRandAugment(fill=FILL, **kw).transforms["L" if shape[0] == 1 else "RGB"]
    n = 48
    x = random_images(n, *shape, seed=4)
    p = policy.draw(n, "cpu", gen(5))
    out = policy.apply(x, p)
    for i in range(n):
        script = ScriptedRandom(p, i, policy)
        monkeypatch.setattr(taa, "random", script)
        monkeypatch.setattr(taa, "np", script.np)
        ref = from_pil(pil(to_pil(x[i])))
        assert not script.events, "timm drew fewer numbers than the device did"
        tol = sum(TOLERANCE[ta.OPS[int(p["op"][i, k])]] for k in range(policy.num_slots) if p["applied"][i, k])
        assert int((out[i].int() - ref.int()).abs().max()) <= tol, i
    assert p["applied"].any(1).float().mean() > 0.5


# ---------------------------------------------------------------- 4. sync-free, fixed op count, input handling

@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28)], ids=lambda s: "x".join(map(str, s)))
def test_fixed_op_count_and_no_syncs_on_meta(shape):
    policy = ta.BatchTimmRandAugment(fill=FILL)
    small, large = count_ops(policy, 8, shape), count_ops(policy, 256, shape)
    assert small["by_op"] == large["by_op"] and small["ops"] == large["ops"] > 50
    for counts in (small, large):
        assert counts["syncs"] == 0 and counts["blocking_copies"] == 0
        assert not {"nonzero", "_local_scalar_dense", "_unique2", "masked_select"} & set(counts["by_op"])


def test_shape_dtype_preserved_input_untouched_reproducible():
    policy = ta.BatchTimmRandAugment(fill=FILL)
    x = check_batch_policy_contract(policy, SHAPES, (12, 13, 8, 9))
    assert torch.equal(ta.BatchTimmRandAugment(num_ops=0)(x), x)


def test_bad_input_and_settings_rejected():
    policy = ta.BatchTimmRandAugment()
    u8 = torch.uint8
    for bad in (torch.zeros(2, 3, 8, 8), torch.zeros(3, 8, 8, dtype=u8), torch.zeros(2, 2, 8, 8, dtype=u8)):
        with pytest.raises(ValueError):
            policy(bad)
    for kw in (dict(magnitude=11), dict(magnitude=-1), dict(num_ops=-1), dict(magnitude_std=-0.5),
               dict(magnitude_std=math.nan), dict(prob=1.5), dict(interpolation="nearest")):
        for cls in (ta.BatchTimmRandAugment, ta.TimmRandAugment):
            with pytest.raises(ValueError):
                cls(**kw)
    with pytest.raises(UserError, match="timm_randaugment"):
        build_policy("timm_randaugment", ra_m=27)


def test_build_policy():
    pil, batch = build_policy("timm_randaugment", ra_n=3, ra_m=7, ra_mstd=1.0, ra_prob=0.7, ra_inc=False,
                              mean=C10_MEAN)
    assert isinstance(pil, ta.TimmRandAugment) and isinstance(batch, ta.BatchTimmRandAugment)
    assert pil.config == batch.config == "rand-m7-n3-mstd1.0-p0.7-inc0" and pil.fill == FILL
    assert batch.fill.tolist() == list(FILL) and batch.op_names == ta.RAND_OPS
    pil, batch = build_policy("timm_randaugment")  # the defaults are the CCT / DeiT config, timm's grey fill
    assert batch.config == "rand-m9-n2-mstd0.5-p0.5-inc1" and pil.fill == (128, 128, 128)
    pil, batch = build_policy("randaugment", ra_n=1, ra_m=5)  # the old keywords still work
    assert isinstance(pil, T.RandAugment) and (pil.num_ops, pil.magnitude) == (1, 5)


# ---------------------------------------------------------------- torch.compile

@pytest.mark.slow
def test_compiled_apply_equals_eager():
    # One op per image: a second slot is the same code again, and would double the compile time.
    policy = ta.BatchTimmRandAugment(num_ops=1, prob=1.0, fill=FILL)
    x = random_images(16, 3, 32, 32, seed=14)
    compiled = torch.compile(lambda images, params: policy.apply(images, params), fullgraph=True)
    for seed in (15, 16):
        p = policy.draw(16, "cpu", gen(seed))
        assert torch.equal(compiled(x, p), policy.apply(x, p))
    drawn = torch.compile(lambda images: policy(images), fullgraph=True)  # draw + apply in one graph
    out = drawn(x)
    assert out.shape == x.shape and out.dtype == torch.uint8
