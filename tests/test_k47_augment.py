"""Tests for k47_augment.py: kentaroy47/vision-transformers-cifar10's RandAugment (N=2, M=14 in the
k47_vit_patch4 recipe) on both input paths. The PIL reference (`pil_op`) against hand-computed
pixels and the source's stated semantics; every batched op against it bit for bit (both signs,
several magnitudes, every magnitude for the geometric ops, RGB and grey, random and extreme
images); the workers path against a transcription of the source's draws; the device path against
the workers path with the same draws; the draws' frequencies; sync-freedom and a fixed op count on
the meta device. CPU only."""
import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageColor

import k47_augment as ka
from autoaugment import count_ops
from autoaugment_helpers import check_batch_policy_contract, from_pil, random_images, to_pil, within
from conftest import gen
from utils import UserError

pytestmark = pytest.mark.usefixtures("one_thread_module")

SHAPES = [(3, 32, 32), (1, 17, 23), (3, 24, 40)]  # CIFAR, grey and odd, non-square
MAGNITUDES = [0, 5, 14, 23, 30]


def images(shape, seed=0):
    """random_images' hard cases, plus an all-black and an all-white image."""
    x = random_images(8, *shape, seed=seed)
    return torch.cat([x, torch.zeros(1, *shape, dtype=torch.uint8), torch.full((1, *shape), 255, dtype=torch.uint8)])


def forced(n, name, sign, centre):
    return {"op": torch.full((n, 1), ka.OP_INDEX[name]), "sign": torch.full((n, 1), float(sign), dtype=torch.float64),
            "centre": centre.view(n, 1, 2)}


# ---------------------------------------------------------------- 0. the semantics

def test_values_follow_the_source_and_its_asserts_hold_at_every_magnitude():
    assert len(ka.OPS) == 16 and ka.OPS[0] == "AutoContrast" and ka.OPS[-1] == "TranslateYabs"
    assert set(ka.RANGES) == set(ka.OPS) and set(ka.SIGNED) < set(ka.OPS)
    for m in range(31):
        values = ka.op_values(m)
        for name, (lo, hi) in ka.RANGES.items():
            assert values[name] == (float(m) / 30) * float(hi - lo) + lo
            assert lo <= values[name] <= hi, (name, m)  # e.g. Rotate |v| <= 30, Color 0.1..1.9
        assert 1 <= max(1, int(values["Posterize"])) <= 4
    v = ka.op_values(14)
    assert int(v["Posterize"]) == 1 and v["TranslateXabs"] > 32 and abs(v["Rotate"] - 14) < 1e-12
    assert ka.K47RandAugment.before_crop is True and ka.BatchK47RandAugment.before_crop is True
    assert ka.CUTOUT_FILL_L == ImageColor.getcolor("rgb(125,123,114)", "L") == 123


def test_numpy_uniform_is_numpys_and_keeps_the_quirk():
    np.random.seed(3)
    draws = np.random.uniform(32, size=20000)  # uniform(low=32, high=1.0)
    np.random.seed(3)
    units = np.random.random_sample(20000)
    assert np.array_equal(draws, ka.numpy_uniform(32, units))
    assert draws.min() > 1 and draws.max() <= 32  # between 1 and w, not 0 and w
    state = np.random.get_state()
    a = np.random.uniform(24)
    np.random.set_state(state)
    assert a == ka.numpy_uniform(24, np.random.random_sample())  # one double each


def test_pil_reference_on_hand_computed_pixels():
    x = torch.arange(256, dtype=torch.uint8).view(1, 16, 16)
    img = to_pil(x)
    v = ka.op_values(14)
    out = from_pil(ka.pil_op(img, "Posterize", v["Posterize"])).long()
    assert torch.equal(out, (x.long() >= 128) * 128)  # 1 bit at m=14
    out = from_pil(ka.pil_op(img, "Solarize", v["Solarize"]))  # threshold 119.47: 119 kept, 120 inverted
    assert out[0, 7, 7] == 119 and out[0, 7, 8] == 135 and out[0, 0, 0] == 0 and out[0, 15, 15] == 0
    out = from_pil(ka.pil_op(img, "SolarizeAdd", v["SolarizeAdd"])).view(-1)  # + 51.33, truncated, solarized
    assert out[0] == 51 and out[76] == 127 and out[77] == 127 and out[100] == 104 and out[250] == 0
    assert torch.equal(from_pil(ka.pil_op(img, "Invert", 0.0)), 255 - x)
    rgb = to_pil(random_images(1, 3, 32, 32, seed=1)[0])
    for name in ("TranslateXabs", "TranslateYabs"):
        for sign in (1, -1):
            assert (from_pil(ka.pil_op(rgb, name, v[name], sign)) == 0).all()  # 46.7 px: all fill
    t = random_images(1, 3, 24, 40, seed=2)[0]
    shifted = from_pil(ka.pil_op(to_pil(t), "TranslateXabs", ka.op_values(3)["TranslateXabs"], 1))  # 10 px
    assert torch.equal(shifted[:, :, :30], t[:, :, 10:]) and (shifted[:, :, 30:] == 0).all()
    shifted = from_pil(ka.pil_op(to_pil(t), "TranslateYabs", ka.op_values(3)["TranslateYabs"], -1))
    assert torch.equal(shifted[:, 10:], t[:, :14]) and (shifted[:, :10] == 0).all()


@pytest.mark.parametrize("ux,uy,cols,rows", [(0.0, 0.0, (22, 31), (22, 31)), (0.5, 1 - 2**-53, (7, 25), (0, 18)),
                                             (0.7, 0.3, (0, 18), (13, 31))])
def test_cutout_fills_the_expected_box(ux, uy, cols, rows):
    # m=14: 18.67 px. u=0: x0 = 32 (uniform(32) lies in (1, 32]), int(32 - 9.33) = 22, x1 = min(32, .):
    # columns 22..31 (PIL clips 32); u=0.5: 16.5 - 9.33 -> 7, 7 + 18.67 -> 25, both ends included;
    # u -> 1: 1.0 - 9.33 -> max(0, .) = 0, x1 = 18.67 -> 18; u=0.7: 10.3 - 9.33 -> 0; u=0.3: 22.7 -> 13.
    v = ka.op_values(14)["CutoutAbs"]
    for c, fill in ((3, ka.CUTOUT_FILL), (1, (123,))):
        x = random_images(1, c, 32, 32, seed=5)[0]
        out = from_pil(ka.pil_op(to_pil(x), "CutoutAbs", v, centre=(ux, uy)))
        box = torch.zeros(32, 32, dtype=torch.bool)
        box[rows[0]:rows[1] + 1, cols[0]:cols[1] + 1] = True
        assert torch.equal(out[:, ~box], x[:, ~box])
        assert (out[:, box] == torch.tensor(fill, dtype=torch.uint8).view(c, 1)).all()
    assert ka.cutout_box(32, 32, v, ux, uy)[:2] == (cols[0], rows[0])


def test_rotate_matrix_is_pils():
    img = to_pil(random_images(1, 3, 24, 40, seed=6)[0])
    for degrees in (14.000000000000002, -14.000000000000002, 30.0, -1.0, 7.3):
        m = ka.pil_rotate_matrix(degrees, *img.size)
        assert from_pil(img.transform(img.size, Image.Transform.AFFINE, m)).equal(from_pil(img.rotate(degrees)))
    assert ka.pil_rotate_matrix(0.0, 32, 32) is None and ka.pil_rotate_matrix(-0.0, 32, 32) is None


# ---------------------------------------------------------------- 1. every batched op against the PIL reference

def check_op(policy, x, name, sign, centre):
    out = policy.apply(x, forced(len(x), name, sign, centre))
    for i, (im, o) in enumerate(zip(x, out)):
        ref = from_pil(ka.pil_op(to_pil(im), name, policy.values[name], int(sign), tuple(centre[i].tolist())))
        assert torch.equal(o, ref), f"{name} m={policy.magnitude} sign={sign} image {i}: " \
                                    f"max diff {int((o.int() - ref.int()).abs().max())}"


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("m", MAGNITUDES)
def test_batched_ops_match_pil(shape, m):
    policy, x = ka.BatchK47RandAugment(1, m), images(shape, seed=m)
    centre = torch.rand(len(x), 2, dtype=torch.float64, generator=gen(m))
    centre[0], centre[1] = 0.0, 1 - 2**-53  # the ends of the draw
    for name in ka.OPS:
        for sign in ((1, -1) if name in ka.SIGNED else (1,)):
            check_op(policy, x, name, sign, centre)


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 17, 23)], ids=lambda s: "x".join(map(str, s)))
def test_geometric_ops_match_pil_at_every_magnitude(shape):
    x = images(shape, seed=7)[[0, 4, 6]]
    for m in range(31):
        policy = ka.BatchK47RandAugment(1, m)
        for name in ka.SIGNED:
            for sign in (1, -1):
                check_op(policy, x, name, sign, torch.zeros(len(x), 2, dtype=torch.float64))


def test_nearest_affine_matches_pil_for_other_matrices():
    # Rotations by any angle, shears, scalings and mixtures: PIL's fixed-point loop.
    g = np.random.default_rng(0)
    for shape in ((3, 32, 32), (1, 17, 23)):
        x = random_images(1, *shape, seed=8).expand(40, -1, -1, -1).contiguous()
        img = to_pil(x[0])
        mats = [ka.pil_rotate_matrix(float(d), *img.size) for d in g.uniform(-180, 180, 20)]
        mats += [list(r) for r in g.uniform(-1.5, 1.5, (20, 6)) * [1, 1, 10, 1, 1, 10]]
        out = ka.pil_nearest_affine(x.view(40, shape[0], -1), torch.tensor(mats, dtype=torch.float64), *shape[1:])
        for o, mat in zip(out, mats):
            ref = from_pil(img.transform(img.size, Image.Transform.AFFINE, mat))
            assert torch.equal(o.view(shape), ref), mat


# ---------------------------------------------------------------- 2. the workers path

def source_randaugment(img, n, m):
    """The source's RandAugment.__call__ as its semantics are written out: the choice, then each
    op with its own draws, numpy's uniform(w) called as the source calls it."""
    ops = random.choices([(name, *ka.RANGES[name]) for name in ka.OPS], k=n)
    for name, lo, hi in ops:
        val = (float(m) / 30) * float(hi - lo) + lo
        if name in ka.SIGNED and random.random() > 0.5:
            val = -val
        if name == "CutoutAbs":
            from PIL import ImageDraw
            w, h = img.size
            x0, y0 = np.random.uniform(w), np.random.uniform(h)
            x0, y0 = int(max(0, x0 - val / 2.)), int(max(0, y0 - val / 2.))
            img = img.copy()
            ImageDraw.Draw(img).rectangle((x0, y0, min(w, x0 + val), min(h, y0 + val)), ka.CUTOUT_FILL)
        else:
            img = ka.pil_op(img, name, val)
    return img


@pytest.mark.parametrize("n,m", [(2, 14), (3, 9), (1, 30)])
def test_workers_path_draws_and_applies_as_the_source(n, m):
    pil, x = ka.K47RandAugment(n, m), random_images(8, 3, 32, 32, seed=9)
    for seed in range(60):
        img = to_pil(x[seed % 8])
        random.seed(seed)
        np.random.seed(seed)
        ours = from_pil(pil.apply(img, pil.draw()))
        states = random.getstate(), np.random.get_state()[1]
        random.seed(seed)
        np.random.seed(seed)
        assert torch.equal(ours, from_pil(source_randaugment(img, n, m))), seed
        assert random.getstate() == states[0] and np.array_equal(np.random.get_state()[1], states[1])


def test_workers_path_is_reproducible_from_torchs_rng_and_leaves_the_others_alone():
    pil = ka.K47RandAugment()
    for img in (to_pil(random_images(7, 3, 32, 32, seed=3)[6]), to_pil(random_images(7, 1, 17, 23, seed=3)[6])):
        random.seed(1)
        np.random.seed(1)
        before = random.random(), np.random.rand()
        runs = []
        for _ in range(2):
            random.seed(1)
            np.random.seed(1)
            torch.manual_seed(5)
            runs.append([from_pil(pil(img)) for _ in range(30)])
            assert (random.random(), np.random.rand()) == before  # their states were restored
        assert all(a.equal(b) for a, b in zip(*runs)) and len({bytes(a.numpy()) for a in runs[0]}) > 10
    from loaders import _UInt8Dataset
    import torchvision.transforms as T
    ds = _UInt8Dataset(random_images(7, 3, 32, 32), torch.arange(7), T.Compose([pil, T.PILToTensor()]))
    assert ds[(6, 11)][0].equal(ds[(6, 11)][0]) and not ds[(6, 11)][0].equal(ds[(6, 12)][0])


# ---------------------------------------------------------------- 3. device path == workers path

def to_device_params(draws):
    return {"op": torch.tensor([d["op"] for d in draws]),
            "sign": torch.tensor([d["sign"] for d in draws], dtype=torch.float64),
            "centre": torch.tensor([d["centre"] for d in draws], dtype=torch.float64)}


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 17, 23)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("n,m", [(2, 14), (3, 7)])
def test_device_path_equals_workers_path_with_the_same_draws(shape, n, m):
    pil, policy, x = ka.K47RandAugment(n, m), ka.BatchK47RandAugment(n, m), images(shape, seed=10).repeat(8, 1, 1, 1)
    random.seed(11)
    np.random.seed(11)
    draws = [pil.draw() for _ in x]
    out = policy.apply(x, to_device_params(draws))
    for i, (im, d) in enumerate(zip(x, draws)):
        assert torch.equal(out[i], from_pil(pil.apply(to_pil(im), d))), (i, d)
    assert len({o for d in draws for o in d["op"]}) == 16  # every op met
    p = policy.draw(len(x), "cpu", gen(12))  # and the device's own draws, replayed in PIL
    out = policy.apply(x, p)
    for i, im in enumerate(x):
        d = {"op": p["op"][i].tolist(), "sign": p["sign"][i].long().tolist(), "centre": p["centre"][i].tolist()}
        assert torch.equal(out[i], from_pil(pil.apply(to_pil(im), d))), i


# ---------------------------------------------------------------- 4. draws

def test_device_draws_are_uniform_with_fair_signs():
    n = 20000
    p = ka.BatchK47RandAugment().draw(n, "cpu", gen(13))
    assert p["op"].shape == p["sign"].shape == (n, 2) and p["centre"].shape == (n, 2, 2)
    for k in range(2):
        counts = torch.bincount(p["op"][:, k], minlength=16)
        assert int(counts.sum()) == n and all(within(int(c), n, 1 / 16) for c in counts)
    assert within(int((p["op"][:, 0] == p["op"][:, 1]).sum()), n, 1 / 16)  # with replacement
    signed = torch.tensor([name in ka.SIGNED for name in ka.OPS])[p["op"]]
    assert within(int((p["sign"][signed] < 0).sum()), int(signed.sum()), 0.5)
    assert (p["sign"][~signed] == 1).all() and p["sign"].dtype == torch.float64
    c = p["centre"]
    assert c.dtype == torch.float64 and (c >= 0).all() and (c < 1).all() and abs(float(c.mean()) - 0.5) < 0.01


def test_workers_draws_are_uniform_with_fair_signs():
    pil, n = ka.K47RandAugment(), 6000
    random.seed(14)
    draws = [pil.draw() for _ in range(n // 2)]
    ops = [o for d in draws for o in d["op"]]
    assert all(within(ops.count(i), n, 1 / 16) for i in range(16))
    signs = [s for d in draws for o, s in zip(d["op"], d["sign"]) if ka.OPS[o] in ka.SIGNED]
    assert within(signs.count(-1), len(signs), 0.5)


# ---------------------------------------------------------------- 5. sync-free, fixed op count, input handling

@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28)], ids=lambda s: "x".join(map(str, s)))
def test_fixed_op_count_and_no_syncs_on_meta(shape):
    policy = ka.BatchK47RandAugment()
    small, large = count_ops(policy, 8, shape), count_ops(policy, 256, shape)
    assert small["by_op"] == large["by_op"] and small["ops"] == large["ops"] > 50
    for counts in (small, large):
        assert counts["syncs"] == 0 and counts["blocking_copies"] == 0 and counts["host_inputs"] == 0
        assert not {"nonzero", "_local_scalar_dense", "_unique2", "masked_select"} & set(counts["by_op"])


def test_shape_dtype_preserved_input_untouched_reproducible():
    policy = ka.BatchK47RandAugment()
    x = check_batch_policy_contract(policy, SHAPES, (15, 16, 17, 18))
    assert torch.equal(ka.BatchK47RandAugment(num_ops=0)(x), x)
    assert repr(policy) == "BatchK47RandAugment(num_ops=2, magnitude=14)"
    assert repr(ka.K47RandAugment(3, 9.0)) == "K47RandAugment(num_ops=3, magnitude=9)"


def test_bad_settings_and_input_rejected():
    for kw in (dict(magnitude=31), dict(magnitude=-1), dict(magnitude=14.5), dict(magnitude="14"),
               dict(magnitude=True), dict(num_ops=-1), dict(num_ops=2.5), dict(num_ops=None)):
        for cls in (ka.BatchK47RandAugment, ka.K47RandAugment):
            with pytest.raises(UserError, match="k47 RandAugment"):
                cls(**kw)
    u8 = torch.uint8
    for bad in (torch.zeros(2, 3, 8, 8), torch.zeros(3, 8, 8, dtype=u8), torch.zeros(2, 2, 8, 8, dtype=u8)):
        with pytest.raises(ValueError):
            ka.BatchK47RandAugment()(bad)
    with pytest.raises(ValueError, match="RGB or L"):
        ka.K47RandAugment()(Image.new("RGBA", (8, 8)))


@pytest.mark.slow
def test_compiled_apply_equals_eager():
    policy = ka.BatchK47RandAugment(num_ops=1)  # a second slot is the same code again
    x = images((3, 32, 32), seed=19).repeat(4, 1, 1, 1)
    compiled = torch.compile(lambda images, params: policy.apply(images, params), fullgraph=True)
    for seed in (20, 21):
        p = policy.draw(len(x), "cpu", gen(seed))
        assert torch.equal(compiled(x, p), policy.apply(x, p))
