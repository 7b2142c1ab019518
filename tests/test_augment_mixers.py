"""augment.py's mixers: MixUp, CutMix against a reference of the original ViT-CIFAR code (written
here from its description) and the original's mean lambda, lambda as the kept area, the mixing
choice (the original's: both flags give CutMix; or random, with its probability), and the mixed
loss and accuracy with a tensor lambda.
"""
import math

import numpy as np
import torch

import augment
from augment import CutMix, MixUp, build_mixer
from conftest import gen
from criterions import mixed_correct, mixed_loss


# ---------------------------------------------------------------- references of the original

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
