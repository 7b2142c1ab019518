"""augment.py's image ops: crop and flip, and the extras (RandomCropPaste, Cutout, RandomErasing),
with RandomCropPaste against a per-image reference of the original ViT-CIFAR code (written here
from its description, as plain loops) and its statistics. The mixers are in test_augment_mixers.py;
the builders and the op-count audit (a fixed number of ops per call, no host syncs, no
host-to-device copies) in test_augment_builders_and_audit.py.
"""
import collections
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from augment import random_crop, random_hflip
from conftest import gen
from extras import Cutout, RandomCropPaste, RandomErasing


# ---------------------------------------------------------------- references of the original

def rcpaste_reference_draws(rs, size):
    """The draws the original RandomCropPaste makes for one image, from a numpy RandomState,
    in its order, with the geometry they give."""
    lam = rs.beta(1.0, 1.0)
    cut_rat = math.sqrt(1.0 - lam)
    cut_w = cut_h = int(size * cut_rat)
    cx, cy = rs.randint(size), rs.randint(size)
    x1, x2 = min(max(cx - cut_w // 2, 0), size), min(max(cx + cut_w // 2, 0), size)
    y1, y2 = min(max(cy - cut_h // 2, 0), size), min(max(cy + cut_h // 2, 0), size)
    w, h = x2 - x1, y2 - y1
    px = rs.randint(0, size - w) if size - w > 0 else 0
    py = rs.randint(0, size - h) if size - h > 0 else 0
    return dict(x1=x1, y1=y1, w=w, h=h, px=px, py=py, flip_front=rs.rand() < 0.5,
                flip_image=rs.rand() < 0.5, a=rs.rand())


def rcpaste_reference(img, lam, u_cx, u_cy, u_px, u_py, flip_front, flip_image, a):
    """The original RandomCropPaste on one C,H,W image, given its draws (the integer draws as
    the uniforms the batched op maps to them)."""
    _, size_h, size_w = img.shape
    cut_rat = math.sqrt(1.0 - lam)
    cut_w, cut_h = int(size_w * cut_rat), int(size_h * cut_rat)
    cx, cy = int(u_cx * size_w), int(u_cy * size_h)
    x1, x2 = min(max(cx - cut_w // 2, 0), size_w), min(max(cx + cut_w // 2, 0), size_w)
    y1, y2 = min(max(cy - cut_h // 2, 0), size_h), min(max(cy + cut_h // 2, 0), size_h)
    front = img[:, y1:y2, x1:x2].clone()
    w, h = x2 - x1, y2 - y1
    px = int(u_px * (size_w - w)) if size_w - w > 0 else 0
    py = int(u_py * (size_h - h)) if size_h - h > 0 else 0
    if flip_front:
        front = front.flip(-1)
    img = img.flip(-1) if flip_image else img.clone()
    img[:, py:py + h, px:px + w] = img[:, py:py + h, px:px + w] * a + front * (1 - a)
    return img


# ---------------------------------------------------------------- stage 1

def test_random_crop_is_a_window_of_the_padded_image():
    x = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8, generator=gen(1))
    out = random_crop(x, 2, generator=gen())
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = F.pad(x, (2, 2, 2, 2))
    offsets = set()
    for i in range(50):
        matches = [(t, l) for t in range(5) for l in range(5) if torch.equal(padded[i, :, t:t + 8, l:l + 8], out[i])]
        assert matches, f"image {i} is not a crop of its padded image"
        offsets.add(matches[0])
    assert len(offsets) > 10  # offsets drawn per image


def test_hflip_flips_about_half():
    x = torch.randint(0, 256, (400, 1, 4, 4), dtype=torch.uint8, generator=gen(1))
    out = random_hflip(x, generator=gen())
    flipped = (out == x.flip(-1)).flatten(1).all(1) & ~(out == x).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert bool((flipped | kept).all())
    assert 150 < int(flipped.sum()) < 250


# ---------------------------------------------------------------- stage 2

@pytest.mark.parametrize("op", [RandomCropPaste(), Cutout(8), RandomErasing(p=1.0)])
@pytest.mark.parametrize("shape", [(6, 3, 32, 32), (3, 1, 28, 28)])
def test_extras_keep_shape_dtype_and_change_images(op, shape):
    x = torch.randn(shape, generator=gen(5))
    out = op(x, generator=gen())
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not torch.equal(out, x)
    assert op(x, generator=gen(1)).ne(out).any()  # depends on the generator
    assert torch.equal(op(x, generator=gen()), out)  # and only on it


def test_global_rng_when_no_generator():
    x = torch.randn(4, 3, 16, 16, generator=gen(5))
    torch.manual_seed(3)
    first = RandomCropPaste()(x)
    torch.manual_seed(3)
    assert torch.equal(RandomCropPaste()(x), first)


def test_cutout_zeroes_a_clipped_square():
    x = torch.ones(200, 1, 16, 16)
    out = Cutout(8)(x, generator=gen())
    zeros = (out == 0).flatten(1).sum(1)
    assert int(zeros.max()) == 64 and int(zeros.min()) >= 16  # 8x8, or clipped at a corner to >= 4x4


@pytest.mark.parametrize("shape", [(64, 3, 32, 32), (32, 2, 12, 20)])
def test_random_crop_paste_equals_the_per_image_reference(shape):
    op = RandomCropPaste()
    x = torch.randn(shape, generator=gen(7))
    params = op.draw(x, generator=gen(8))
    out = op.apply(x, params)
    for i in range(shape[0]):
        p = {k: v[i].item() for k, v in params.items()}
        expected = rcpaste_reference(x[i], p["lam"], p["u_cx"], p["u_cy"], p["u_px"], p["u_py"],
                                     p["flip_front"], p["flip_image"], p["weight"])
        torch.testing.assert_close(out[i], expected, rtol=0, atol=1e-6)
    assert torch.equal(op(x, generator=gen(8)), out)


def test_random_crop_paste_statistics_match_the_original(capsys):
    size, n_ref, n = 32, 20000, 200000
    rs = np.random.RandomState(0)
    ref = [rcpaste_reference_draws(rs, size) for _ in range(n_ref)]
    ref_area = np.array([r["w"] * r["h"] for r in ref], dtype=float)
    ref_a = np.array([r["a"] for r in ref])
    ref_edge = np.mean([r["px"] + r["w"] == size and r["w"] < size for r in ref])  # never, by the exclusive bound

    op = RandomCropPaste()
    params = op.draw(torch.empty(1, 1, size, size).expand(n, -1, -1, -1), generator=gen(0))
    g = op.geometry(params, size, size)
    area = (g["bw"] * g["bh"]).double().numpy()
    weight = params["weight"].double().numpy()
    with capsys.disabled():
        print(f"\n[parity RandomCropPaste] mean pasted area {area.mean():.1f} px (reference {ref_area.mean():.1f}); "
              f"weight/area correlation {np.corrcoef(weight, area)[0, 1]:+.4f} "
              f"(reference {np.corrcoef(ref_a, ref_area)[0, 1]:+.4f})")

    assert abs(area.mean() / ref_area.mean() - 1) < 0.03, (area.mean(), ref_area.mean())
    assert abs(np.mean(area == 0) - np.mean(ref_area == 0)) < 0.01
    # The blend weight is independent of the box: no correlation, unlike a weight tied to lam.
    assert abs(np.corrcoef(weight, area)[0, 1]) < 0.02
    assert abs(np.corrcoef(ref_a, ref_area)[0, 1]) < 0.03
    assert ref_edge == 0 and not bool(((g["px"] + g["bw"] == size) & (g["bw"] < size)).any())
    for key in ("flip_front", "flip_image"):
        assert abs(params[key].double().mean().item() - 0.5) < 0.01
        assert abs(np.mean([r[key] for r in ref]) - 0.5) < 0.02
    boxes_inside = ((g["x1"] + g["bw"] <= size) & (g["px"] + g["bw"] <= size)).all()
    assert bool(boxes_inside)


def test_random_crop_paste_blends_inside_one_box():
    x = torch.randn(20, 3, 16, 16, generator=gen(2))
    op = RandomCropPaste()
    params = op.draw(x, generator=gen())
    out = op.apply(x, params)
    base = torch.where(params["flip_image"][:, None, None, None], x.flip(-1), x)
    changed = ((out - base).abs() > 1e-5).any(1)  # B,H,W
    g = op.geometry(params, 16, 16)
    for i in range(20):
        px, py, bw, bh = (int(g[k][i]) for k in ("px", "py", "bw", "bh"))
        outside = changed[i].clone()
        outside[py:py + bh, px:px + bw] = False
        assert not outside.any()


# ---------------------------------------------------------------- Zhong et al.'s random erasing

def zhong_reference_box(rng, h, w, sl=0.02, sh=0.4, r1=0.3, attempts=100):
    """Zhong et al.'s RandomErasing (p = 1) for an (h, w) image, written from its description:
    the (box_h, box_w) it erases, or None when none of its attempts fits."""
    for _ in range(attempts):
        area = rng.uniform(sl, sh) * h * w
        aspect = rng.uniform(r1, 1 / r1)
        bh, bw = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        if bw < w and bh < h:
            return bh, bw
    return None


def test_zhong_erasing_box_sizes_match_the_reference_and_fill_with_the_mean():
    import random

    from autoaugment_helpers import within
    from extras import ZhongErasing
    n, h, w = 20000, 8, 8  # small images: whole attempts fail often, boxes hit the edges
    erase = ZhongErasing(p=1.0, value=(0.5, -1.25, 2.0))
    out = erase(torch.zeros(n, 3, h, w), gen(3))
    mask = out[:, 0] != 0
    assert torch.equal(mask, out[:, 1] != 0) and (out[:, 0][mask] == 0.5).all()
    assert (out[:, 1][mask] == -1.25).all() and (out[:, 2][mask] == 2.0).all()  # the given value, per channel
    rows, cols = mask.any(2), mask.any(1)
    box_h, box_w = rows.sum(1), cols.sum(1)
    assert torch.equal(mask.sum((1, 2)), box_h * box_w)  # one solid rectangle per image
    got = collections.Counter(zip(box_h.tolist(), box_w.tolist()))
    rng = random.Random(4)
    want = collections.Counter(zhong_reference_box(rng, h, w) or (0, 0) for _ in range(n))
    assert got.keys() <= want.keys() | {(0, 0)}
    for size in want.keys() | got.keys():
        p = want[size] / n
        assert abs(got[size] - want[size]) <= 4 * math.sqrt(2 * n * p * (1 - p)) + 3, (size, got[size], want[size])
    # Offsets: every position of a box fits, both ends included.
    tops = rows.float().argmax(1)[box_h == 3]
    assert set(tops.tolist()) == set(range(0, h - 3 + 1))
    # p: the share of images erased.
    some = ZhongErasing(p=0.25)(torch.zeros(4000, 3, 32, 32), gen(5))
    assert within(int((some != 0).flatten(1).any(1).sum()), 4000, 0.25)
