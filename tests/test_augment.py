"""augment.py: the batched ops against per-image references of the original ViT-CIFAR code
(written here from its description, as plain loops), their statistics, and the op-count audit:
a fixed number of ops per call, no host syncs, no host-to-device copies.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import augment
from augment import (BatchMixer, CutMix, Cutout, MixUp, RandomCropPaste, RandomErasing, build_extras,
                     build_mixer, count_ops, random_crop, random_hflip)
from criterions import mixed_correct, mixed_loss
from utils import UserError


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


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


def cutmix_reference_box(lam, r_x, r_y, size_h, size_w):
    r_w, r_h = size_w * math.sqrt(1 - lam), size_h * math.sqrt(1 - lam)
    x1, x2 = int(min(max(r_x - r_w // 2, 0), size_w)), int(min(max(r_x + r_w // 2, 0), size_w))
    y1, y2 = int(min(max(r_y - r_h // 2, 0), size_h)), int(min(max(r_y + r_h // 2, 0), size_h))
    return x1, x2, y1, y2


def cutmix_reference(x, y, lam, r_x, r_y, perm):
    size_h, size_w = x.shape[-2:]
    x1, x2, y1, y2 = cutmix_reference_box(lam, r_x, r_y, size_h, size_w)
    x = x.clone()
    x[:, :, y1:y2, x1:x2] = x[perm, :, y1:y2, x1:x2]
    return x, y, y[perm], 1 - (x2 - x1) * (y2 - y1) / (size_w * size_h)


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


# ---------------------------------------------------------------- stage 3

def test_mixup_is_a_convex_combination():
    x = torch.randn(8, 3, 4, 4, generator=gen(2))
    y = torch.arange(8)
    out, y_a, y_b, lam = MixUp(1.0)(x, y, generator=gen())
    assert lam.dim() == 0 and lam.dtype == torch.float32 and 0 < float(lam) < 1
    perm = y_b  # labels are indices, so y_b is the permutation
    assert torch.allclose(out, lam * x + (1 - lam) * x[perm])
    assert torch.equal(y_a, y)


def test_cutmix_equals_the_reference():
    x = torch.randn(16, 3, 32, 32, generator=gen(3))
    y = torch.arange(16)
    op = CutMix(1.0)
    for seed in range(30):
        g = gen(seed)
        perm = torch.randperm(16, generator=g)
        params = op.draw(x, generator=g)
        out, y_a, y_b, lam = op.apply(x, y, perm, params)
        ref = cutmix_reference(x, y, params["lam"].item(), params["u_x"].item() * 32, params["u_y"].item() * 32, perm)
        assert torch.equal(out, ref[0]) and torch.equal(y_a, ref[1]) and torch.equal(y_b, ref[2])
        assert lam.dim() == 0 and abs(lam.item() - ref[3]) < 1e-6


def test_cutmix_mean_lam_matches_the_original(capsys):
    rs = np.random.RandomState(0)
    ref = []
    for _ in range(100000):
        lam = rs.beta(1.0, 1.0)
        r_x, r_y = rs.uniform(0, 32), rs.uniform(0, 32)
        x1, x2, y1, y2 = cutmix_reference_box(lam, r_x, r_y, 32, 32)
        ref.append(1 - (x2 - x1) * (y2 - y1) / 1024)
    ref = float(np.mean(ref))
    assert 0.695 < ref < 0.711  # ~0.703: the floored half-side (0.678 without it)

    n = 400000
    g = gen(0)
    params = {"lam": augment._beta(1.0, (n,), "cpu", g), "u_x": torch.rand(n, generator=g),
              "u_y": torch.rand(n, generator=g)}
    x1, x2, y1, y2 = CutMix.box(params, 32, 32)
    ours = (1 - (x2 - x1) * (y2 - y1) / 1024).double().mean().item()
    with capsys.disabled():
        print(f"\n[parity CutMix] mean lam {ours:.4f} over {n} draws (reference of the original {ref:.4f})")
    assert abs(ours - ref) < 0.004, (ours, ref)

    # End to end through __call__, fewer draws.
    x, y, op = torch.zeros(2, 1, 32, 32), torch.arange(2), CutMix(1.0)
    calls = torch.stack([op(x, y, generator=g)[3] for _ in range(3000)])
    assert abs(calls.double().mean().item() - ref) < 0.015


def labelled_batch(b=4, size=8):
    x = torch.zeros(b, 1, size, size)
    x[:, 0] = torch.arange(b).view(b, 1, 1).float() + 1  # image i is filled with i + 1
    return x, torch.arange(b)


def test_cutmix_lambda_is_the_kept_area():
    x, y = labelled_batch(4, 32)
    for seed in range(10):
        out, _, y_b, lam = CutMix(1.0)(x, y, generator=gen(seed))
        kept = (out == x).float().mean().item()
        moved = (y_b != y).float()
        assert abs(kept - (1 - (1 - lam.item()) * moved.mean().item())) < 1e-6


def is_cutmix(out):
    return bool((out == out.round()).all())


def test_original_choice_mixup_alone_mixes_80_percent():
    mixer = build_mixer(mixup=True)
    x, y = labelled_batch()
    g = gen()
    mixed = 0
    for _ in range(1000):
        out, y_a, y_b, lam = mixer(x, y, generator=g)
        assert lam.dim() == 0 and y_b.shape == y.shape
        if lam.item() == 1.0:
            assert torch.equal(out, x) and torch.equal(y_b, y)
        else:
            mixed += 1
    assert 760 < mixed < 840


def test_original_choice_with_both_is_always_cutmix():
    mixer = build_mixer(mixup=True, cutmix=True)
    assert len(mixer.mixers) == 1 and isinstance(mixer.mixers[0], CutMix) and mixer.prob == 1.0
    x, y = labelled_batch()
    g = gen()
    assert all(is_cutmix(mixer(x, y, generator=g)[0]) for _ in range(100))


def test_random_choice_picks_either_mixer():
    mixer = build_mixer(mixup=True, cutmix=True, choice="random", mix_prob=1.0)
    x, y = labelled_batch()
    g = gen()
    cut = 0
    for _ in range(400):
        out, _, y_b, lam = mixer(x, y, generator=g)
        if is_cutmix(out):
            cut += 1
        else:
            assert torch.allclose(out, lam * x + (1 - lam) * x[y_b])
    assert 150 < cut < 250


def test_random_choice_probability():
    mixer = build_mixer(mixup=True, choice="random", mix_prob=0.3)
    x, y = labelled_batch()
    g = gen()
    mixed = sum(mixer(x, y, generator=g)[3].item() != 1.0 for _ in range(1000))
    assert 250 < mixed < 350


def test_mixed_loss_takes_a_tensor_lam():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    y_a, y_b, lam = torch.tensor([0, 0]), torch.tensor([1, 1]), torch.tensor(0.3)
    ce = torch.nn.CrossEntropyLoss()
    assert torch.isclose(mixed_loss(ce, logits, y_a, y_b, lam), 0.3 * ce(logits, y_a) + 0.7 * ce(logits, y_b))
    assert torch.isclose(mixed_correct(logits, y_a, y_b, lam), torch.tensor(0.3 + 0.7))
    assert mixed_loss(ce, logits, y_a, y_a, torch.tensor(1.0)) == ce(logits, y_a)


# ---------------------------------------------------------------- builders

def test_build_extras():
    assert build_extras() == []
    extras = build_extras(rcpaste=True, cutout=8, random_erasing=0.25)
    assert [type(e) for e in extras] == [RandomCropPaste, Cutout, RandomErasing]
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
    assert set(augment.POLICIES.names()) == {"autoaugment", "randaugment", "trivialaugment", "none"}
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
