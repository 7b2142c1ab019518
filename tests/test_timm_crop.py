"""Tests for timm_crop.py: timm's RandomResizedCropAndInterpolation (scale 0.8-1, random bilinear /
bicubic) on both input paths. timm and Pillow are the references: the workers path is timm's own
transform under the loader's seeding; the device resize equals Pillow's crop + resize bit for bit
over every box size of several image / output sizes (both filters, RGB and grey, 0/255 extremes,
both of Pillow 13's pass orders); the device draw has get_params' distribution of box sizes,
offsets and filters, and its fallback box; no host syncs and a fixed op count on the meta device."""
import collections
import math
import random

import pytest
import torch
from PIL import Image

pytest.importorskip("timm")
from timm.data.transforms import RandomResizedCropAndInterpolation as TimmRRC  # noqa: E402

import sync_audit  # noqa: E402
import timm_crop as tc  # noqa: E402
from autoaugment import count_ops  # noqa: E402
from autoaugment_helpers import from_pil, random_images, to_pil, within  # noqa: E402
from conftest import gen  # noqa: E402
from utils import UserError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread_module")

BILINEAR, BICUBIC = Image.Resampling.BILINEAR, Image.Resampling.BICUBIC


def extreme_images(n, c, h, w, seed):
    """random_images with every third image pushed to 0 / 255, where bicubic overshoots and clips."""
    x = random_images(n, c, h, w, seed=seed)
    x[::3] = torch.where(x[::3] > 127, 255, 0).to(torch.uint8)
    return x


def timm_call(transform, img, torch_seed):
    """timm's transform seeded as the workers path seeds it."""
    torch.manual_seed(torch_seed)
    random.seed(int(torch.randint(0, 2**63 - 1, ())))
    return transform(img)


# ---------------------------------------------------------------- 1. workers path: timm itself

def test_create_transform_builds_this_crop():
    from timm.data import create_transform
    tf = create_transform(32, is_training=True, scale=(0.8, 1.0), interpolation="random",
                          mean=(0.4914, 0.4822, 0.4465), std=(0.247, 0.2435, 0.2616))
    theirs = [t for t in tf.transforms if isinstance(t, TimmRRC)]
    assert len(theirs) == 1
    mine = tc.TimmRandomResizedCrop(32).transform
    for t in (theirs[0], mine):
        assert t.size == (32, 32) and tuple(t.scale) == (0.8, 1.0) and tuple(t.ratio) == (3 / 4, 4 / 3)
        assert [str(m).split(".")[-1].lower() for m in t.interpolation] == ["bilinear", "bicubic"]


@pytest.mark.parametrize("size,mode", [(32, "RGB"), (24, "L")])
def test_workers_path_is_timms_transform_under_the_seeding(size, mode):
    ours, ref = tc.TimmRandomResizedCrop(size), TimmRRC(size, scale=(0.8, 1.0), interpolation="random")
    img = to_pil(random_images(1, 3 if mode == "RGB" else 1, 32, 32, seed=1)[0])
    outs = []
    for s in range(30):
        random.seed(1234)
        before = random.getstate()
        torch.manual_seed(s)
        out = ours(img)
        assert random.getstate() == before  # Python's random is left as it was
        assert out.size == (size, size) and out.mode == mode
        assert from_pil(out).equal(from_pil(timm_call(ref, img, s)))
        outs.append(bytes(from_pil(out).numpy()))
    assert len(set(outs)) >= 25  # different seeds, different crops
    torch.manual_seed(3)
    assert from_pil(ours(img)).equal(from_pil(timm_call(ref, img, 3)))


def test_workers_path_pixels_are_the_device_kernels():
    """What timm draws (box and filter, replayed from its seed), resized on the device, is what
    timm's transform returns: torchvision's resized_crop on PIL is crop + resize."""
    ours, n = tc.TimmRandomResizedCrop(32), 40
    x = extreme_images(n, 3, 32, 32, seed=2)
    boxes, outs = [], []
    for k in range(n):
        img = to_pil(x[k])
        torch.manual_seed(k)
        outs.append(from_pil(ours(img)))
        torch.manual_seed(k)
        random.seed(int(torch.randint(0, 2**63 - 1, ())))
        box = TimmRRC.get_params(img, ours.scale, ours.ratio)
        boxes.append((*box, str(random.choice(ours.transform.interpolation)).lower().endswith("bicubic")))
    t = torch.tensor(boxes)
    out = tc.pil_resized_crop(x, t[:, 0], t[:, 1], t[:, 2], t[:, 3], t[:, 4].bool(), 32)
    assert torch.equal(out, torch.stack(outs))
    assert 0 < int(t[:, 4].sum()) < n and len(set(map(tuple, t[:, 2:4].tolist()))) > 10


# ---------------------------------------------------------------- 2. the resize is Pillow's

def pillow(x, boxes, bicubic, size):
    return torch.stack([from_pil(to_pil(im).crop((j, i, j + w, i + h)).resize((size, size), BICUBIC if b else BILINEAR))
                        for im, (i, j, h, w), b in zip(x, boxes, bicubic)])


def boxes_and_images(shape, sizes, seed, corners=True):
    """Every (h, w) in `sizes` at a random offset (and at the top-left and bottom-right corners),
    once per filter, on extreme_images: (x, boxes (n, 4) as (top, left, height, width), bicubic)."""
    C, H, W = shape
    g = gen(seed)
    boxes = []
    for h, w in sizes:
        ri, rj = (int(torch.randint(0, n + 1, (), generator=g)) for n in (H - h, W - w))
        boxes += ([(0, 0, h, w), (H - h, W - w, h, w)] if corners else []) + [(ri, rj, h, w)]
    t = torch.tensor(boxes * 2)
    return extreme_images(len(t), C, H, W, seed=seed), t, torch.arange(len(t)) >= len(boxes)


def device(x, t, bicubic, size, **kw):
    return tc.pil_resized_crop(x, t[:, 0], t[:, 1], t[:, 2], t[:, 3], bicubic, size, **kw)


@pytest.mark.parametrize("shape,size,lo", [((3, 32, 32), 32, 20), ((1, 32, 32), 32, 20), ((3, 24, 40), 32, 12),
                                           ((1, 28, 20), 13, 1)],
                         ids=["cifar", "grey", "wide-up-and-down", "grey-down-13"])
def test_resize_equals_pillow_bit_for_bit(shape, size, lo):
    C, H, W = shape
    sizes = [(h, w) for h in range(min(lo, H), H + 1) for w in range(min(lo, W), W + 1)]
    x, t, bicubic = boxes_and_images(shape, sizes, seed=H * W + size)
    out, ref = device(x, t, bicubic, size), pillow(x, t.tolist(), bicubic.tolist(), size)
    assert out.shape == ref.shape == (len(t), C, size, size) and out.dtype == torch.uint8
    bad = (out != ref).flatten(1).any(1)
    assert not bad.any(), f"{int(bad.sum())} of {len(out)} crops differ from Pillow, e.g. {t[bad][:3].tolist()}"


def test_both_pass_orders_and_clipping_are_exercised():
    """Every box of a 32 x 32 image shrunk to 24 x 24: Pillow 13 runs the vertical pass first for
    some (tc.vertical_first), and the other order would differ."""
    sizes = [(h, w) for h in range(1, 33) for w in range(1, 33)]
    x, t, bicubic = boxes_and_images((3, 32, 32), sizes, seed=5, corners=False)
    ref = pillow(x, t.tolist(), bicubic.tolist(), 24)
    assert torch.equal(device(x, t, bicubic, 24), ref)
    first = tc.vertical_first(t[:, 2], t[:, 3], 24)
    assert 0 < int(first.sum()) < len(t)
    other = device(x[first], t[first], bicubic[first], 24, pillow13=not tc.PILLOW13)
    assert (other != ref[first]).flatten(1).any(1).float().mean() > 0.5
    # Bicubic overshoots 0..255 on the extreme images and is clipped, after each pass.
    cubic = tc.pil_coefficients(t[:, 1], t[:, 3], bicubic, 32, 24)
    raw = torch.matmul(x.double(), cubic.transpose(1, 2).unsqueeze(1)) / 2**tc.PRECISION_BITS
    assert raw.min() < -1 and raw.max() > 256


def test_coefficients_are_pillows_weights():
    """The fixed-point rows against Pillow's own double weights, read off mode "F" impulse images."""
    import numpy as np
    for n, size in ((25, 32), (32, 32), (32, 24), (13, 5)):
        for bic in (False, True):
            mine = tc.pil_coefficients(torch.tensor([0]), torch.tensor([n]), torch.tensor([bic]), n, size)[0]
            assert mine.dtype == torch.float64 and torch.equal(mine, mine.round())
            assert (mine.sum(1) - 2**tc.PRECISION_BITS).abs().max() <= 8  # normalised, rounded per tap
            for p in range(n):
                a = np.zeros((1, n), np.float32)
                a[0, p] = 1.0
                ref = np.asarray(Image.fromarray(a, "F").resize((size, 1), BICUBIC if bic else BILINEAR))[0]
                assert np.abs(mine[:, p].numpy() / 2**tc.PRECISION_BITS - ref).max() < 1e-6


# ---------------------------------------------------------------- 3. the draw is get_params'

def same_rate(a, b, n, sigmas=4.0):
    """Two Binomial(n, p) counts with the same p, within `sigmas` standard deviations of each other."""
    p = (a + b) / (2 * n)
    return abs(a - b) <= sigmas * math.sqrt(2 * n * p * (1 - p)) + 2


def timm_boxes(n, H, W, scale, ratio, seed=0):
    random.seed(seed)
    img = Image.new("L", (W, H))
    return [TimmRRC.get_params(img, scale, ratio) for _ in range(n)]


@pytest.mark.parametrize("shape,scale,ratio", [((32, 32), (0.8, 1.0), (3 / 4, 4 / 3)),
                                               ((24, 40), (0.8, 1.0), (3 / 4, 4 / 3)),
                                               ((32, 32), (0.9, 1.0), (1.0, 2.0))],
                         ids=["cifar", "wide", "many-fail"])
def test_box_sizes_follow_get_params(shape, scale, ratio):
    H, W = shape
    n = 20000
    p = tc.BatchTimmRandomResizedCrop(32, scale, ratio).draw(n, H, W, "cpu", gen(1))
    mine = collections.Counter(zip(p["height"].tolist(), p["width"].tolist()))
    theirs = collections.Counter((h, w) for _, _, h, w in timm_boxes(n, H, W, scale, ratio))
    assert set(mine) <= set(theirs) | {k for k in mine if mine[k] < 5}
    for k in set(mine) | set(theirs):
        assert same_rate(mine[k], theirs[k], n), (k, mine[k], theirs[k])
    whole = theirs[(H, W)]
    if ratio == (1.0, 2.0):  # here the fallback (the whole image) is common: all 10 attempts fail
        assert whole > n / 5 and same_rate(mine[(H, W)], whole, n)


def test_offsets_uniform_and_inside():
    n, H, W = 20000, 24, 40
    p = tc.BatchTimmRandomResizedCrop(32, (0.6, 1.0)).draw(n, H, W, "cpu", gen(2))
    _, _, fh, fw = tc.fallback_box(H, W, (3 / 4, 4 / 3))  # centred, and frequent here: left out
    drawn = (p["height"] != fh) | (p["width"] != fw)
    assert 0.05 < float(drawn.double().mean()) < 0.95
    for start, length, full in ((p["top"], p["height"], H), (p["left"], p["width"], W)):
        assert (start >= 0).all() and (start + length <= full).all()
        start, length = start[drawn], length[drawn]
        span = full - length + 1
        for m in span.unique().tolist():
            sel = start[span == m]
            if len(sel) >= 300:
                counts = torch.bincount(sel, minlength=m)
                assert all(within(int(c), len(sel), 1 / m) for c in counts), (m, counts.tolist())


def test_interpolation_draws():
    n = 20000
    for interp, lo, hi in (("random", None, None), ("bilinear", 0, 0), ("bicubic", n, n)):
        b = tc.BatchTimmRandomResizedCrop(32, interpolation=interp).draw(n, 32, 32, "cpu", gen(3))["bicubic"]
        assert b.dtype == torch.bool
        if lo is None:
            assert within(int(b.sum()), n, 0.5)  # random.choice((BILINEAR, BICUBIC))
        else:
            assert lo == int(b.sum()) == hi


@pytest.mark.parametrize("shape,scale,ratio", [((32, 32), (1.0, 1.0), (2.0, 3.0)), ((24, 40), (1.0, 1.0), (2.0, 3.0)),
                                               ((32, 32), (0.9, 1.0), (0.3, 0.5)), ((40, 24), (1.0, 1.0), (3.0, 4.0))])
def test_fallback_box_is_timms(shape, scale, ratio):
    H, W = shape
    theirs = set(timm_boxes(50, H, W, scale, ratio))
    assert len(theirs) == 1 and tc.fallback_box(H, W, ratio) in theirs  # every attempt fails
    p = tc.BatchTimmRandomResizedCrop(16, scale, ratio).draw(500, H, W, "cpu", gen(4))
    assert set(zip(*(p[k].tolist() for k in ("top", "left", "height", "width")))) == theirs


def test_whole_image_fallback_is_timms(monkeypatch):
    """When the image's own ratio lies within `ratio` the fallback is the whole image; force timm
    there by making every attempt draw the largest area and ratio."""
    import timm.data.transforms as tt
    fake = random.Random(0)
    fake.uniform = lambda a, b: b
    monkeypatch.setattr(tt, "random", fake)
    for H, W, ratio in ((32, 32, (0.5, 2.0)), (24, 40, (1.0, 2.0)), (40, 24, (0.5, 0.75))):
        assert TimmRRC.get_params(Image.new("L", (W, H)), (1.0, 1.0), ratio) == tc.fallback_box(H, W, ratio) \
            == (0, 0, H, W)


# ---------------------------------------------------------------- 4. the device call

@pytest.mark.parametrize("shape,size", [((3, 32, 32), 32), ((1, 32, 32), 24)])
def test_fixed_op_count_and_no_syncs_on_meta(shape, size):
    policy = tc.BatchTimmRandomResizedCrop(size)
    small, large = count_ops(policy, 8, shape), count_ops(policy, 256, shape)
    assert small["by_op"] == large["by_op"] and small["ops"] == large["ops"] > 30
    for counts in (small, large):
        assert counts["syncs"] == 0 and counts["blocking_copies"] == 0 and counts["host_inputs"] == 0
        assert not {"nonzero", "_local_scalar_dense", "_unique2", "masked_select"} & set(counts["by_op"])
    x = torch.zeros((5, *shape), dtype=torch.uint8, device="meta")
    out, counts = sync_audit.count(policy, x)
    assert out.shape == (5, shape[0], size, size) and out.dtype == torch.uint8 and counts["syncs"] == 0


def test_call_shape_reproducible_and_per_image():
    policy = tc.BatchTimmRandomResizedCrop(24)
    assert policy.to("cpu") is policy
    x = random_images(1, 3, 32, 32, seed=7).expand(64, -1, -1, -1).contiguous()
    before = x.clone()
    out = policy(x, gen(8))
    assert out.shape == (64, 3, 24, 24) and out.dtype == torch.uint8 and torch.equal(x, before)
    assert len({bytes(o.numpy()) for o in out}) >= 40  # each image draws its own box
    assert torch.equal(out, policy(x, gen(8))) and not torch.equal(out, policy(x, gen(9)))
    torch.manual_seed(2)
    a = policy(x)  # no generator: the global RNG, which the trainer reseeds
    torch.manual_seed(2)
    assert torch.equal(a, policy(x))
    p = policy.draw(64, 32, 32, generator=gen(8))
    assert torch.equal(policy.apply(x, p), out)
    with pytest.raises(ValueError):
        policy(x.float())


@pytest.mark.parametrize("kw", [dict(scale=(0.0, 1.0)), dict(scale=(0.9, 0.8)), dict(scale=(0.5, 1.2)),
                                dict(scale=(-0.1, 0.5)), dict(ratio=(0.0, 1.0)), dict(ratio=(2.0, 1.0)),
                                dict(ratio=(1.0, math.inf)), dict(interpolation="nearest"), dict(scale=0.5),
                                dict(size=0), dict(size=3.5)])
def test_bad_settings_raise_user_error(kw):
    kw = {"size": 32, **kw}
    for cls in (tc.TimmRandomResizedCrop, tc.BatchTimmRandomResizedCrop):
        with pytest.raises(UserError):
            cls(**kw)


@pytest.mark.slow
def test_compiled_apply_equals_eager():
    # Under --compile the device path compiles crop + flip + policy with fullgraph: the crop must
    # trace without a break and give the same pixels as eager.
    policy = tc.BatchTimmRandomResizedCrop(32, scale=(0.8, 1.0))
    x = random_images(16, 3, 32, 32, seed=21)
    compiled = torch.compile(lambda images, params: policy.apply(images, params), fullgraph=True, dynamic=False)
    for seed in (22, 23):
        p = policy.draw(16, 32, 32, generator=gen(seed))
        assert torch.equal(compiled(x, p), policy.apply(x, p))
