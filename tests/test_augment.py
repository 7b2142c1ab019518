"""augment.py: the batched ops against their definitions; shape and dtype kept everywhere."""

import pytest
import torch
import torch.nn.functional as F

from augment import Cutout, CutMix, MixUp, RandomCropPaste, RandomErasing, BatchMixer, random_crop, random_hflip


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_random_crop_is_a_window_of_the_padded_image():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8)
    out = random_crop(x, 2, gen())
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = F.pad(x, (2, 2, 2, 2))
    offsets = set()
    for i in range(50):
        matches = [(t, l) for t in range(5) for l in range(5) if torch.equal(padded[i, :, t:t + 8, l:l + 8], out[i])]
        assert matches, f"image {i} is not a crop of its padded image"
        offsets.add(matches[0])
    assert len(offsets) > 10  # offsets drawn per image


def test_hflip_flips_about_half():
    x = torch.randint(0, 256, (400, 1, 4, 4), dtype=torch.uint8)
    out = random_hflip(x, gen())
    flipped = (out == x.flip(-1)).flatten(1).all(1) & ~(out == x).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert bool((flipped | kept).all())
    assert 150 < int(flipped.sum()) < 250


@pytest.mark.parametrize("op", [RandomCropPaste(), Cutout(8), RandomErasing(p=1.0)])
@pytest.mark.parametrize("shape", [(6, 3, 32, 32), (3, 1, 28, 28)])
def test_extras_keep_shape_dtype_and_change_images(op, shape):
    torch.manual_seed(0)
    x = torch.randn(shape)
    out = op(x, gen())
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not torch.equal(out, x)
    assert op(x, gen(1)).ne(out).any()  # depends on the generator


def test_cutout_zeroes_a_clipped_square():
    x = torch.ones(200, 1, 16, 16)
    out = Cutout(8)(x, gen())
    zeros = (out == 0).flatten(1).sum(1)
    assert int(zeros.max()) == 64 and int(zeros.min()) >= 16  # 8x8, or clipped at a corner to >= 4x4


def test_random_crop_paste_blends_inside_one_box():
    torch.manual_seed(0)
    x = torch.randn(20, 3, 16, 16)
    out = RandomCropPaste()(x, gen())
    changed = ((out - x).abs() > 1e-4).any(1)  # B,H,W; a crop pasted onto itself changes nothing
    for i in range(20):
        ys, xs = torch.nonzero(changed[i], as_tuple=True)
        if len(ys):  # the changed pixels form (part of) one rectangle
            box = changed[i, ys.min():ys.max() + 1, xs.min():xs.max() + 1]
            assert box.float().mean() > 0.5


def test_mixup_is_a_convex_combination():
    x = torch.randn(8, 3, 4, 4)
    y = torch.arange(8)
    out, y_a, y_b, lam = MixUp(1.0)(x, y, gen())
    perm = y_b  # labels are indices, so y_b is the permutation
    assert torch.allclose(out, lam * x + (1 - lam) * x[perm])
    assert torch.equal(y_a, y)


def test_cutmix_lambda_is_the_kept_area():
    x = torch.zeros(4, 1, 32, 32)
    x[:, 0] = torch.arange(4).view(4, 1, 1).float() + 1  # image i is filled with i + 1
    y = torch.arange(4)
    for seed in range(10):
        out, _, y_b, lam = CutMix(1.0)(x, y, gen(seed))
        kept = (out == x).float().mean().item()
        if not torch.equal(y_b, y):  # a fixed point of the shuffle keeps its own pixels
            moved = (y_b != y).float()
            expected = 1 - (1 - lam) * moved.mean().item()
            assert abs(kept - expected) < 1e-6


def test_batch_mixer_probability():
    mixer = BatchMixer([MixUp(1.0)], prob=0.3)
    x, y = torch.randn(4, 3, 2, 2), torch.arange(4)
    g = gen()
    mixed = sum(mixer(x, y, g)[2] is not None for _ in range(1000))
    assert 240 < mixed < 360
