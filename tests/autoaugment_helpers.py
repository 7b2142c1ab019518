"""Shared by the AutoAugment-family tests (test_autoaugment*.py, test_timm_randaugment.py): random
test images (with the hard cases at fixed indices), PIL <-> tensor, a binomial-count check,
torchvision's AutoAugment space, and the policies to check."""
import math

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image

from autoaugment import BatchAutoAugment, BatchRandAugment, BatchTrivialAugmentWide


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


def within(count, n, prob, sigmas=4.0):
    """A Binomial(n, prob) count within `sigmas` standard deviations (plus one) of its mean."""
    return abs(count - n * prob) <= sigmas * math.sqrt(n * prob * (1 - prob)) + 1


def _aa_space(size):
    return T.AutoAugment()._augmentation_space(10, size)


def tv_policies():
    return [BatchAutoAugment("cifar10", ops="torchvision"), BatchAutoAugment("svhn", ops="torchvision"),
            BatchRandAugment(2, 9), BatchRandAugment(3, 25), BatchTrivialAugmentWide()]


def all_policies():
    return [BatchAutoAugment("cifar10"), BatchAutoAugment("svhn")] + tv_policies()


def check_batch_policy_contract(policy, shapes, seeds):
    """What every batched policy promises, whatever its ops: uint8 in and out, the input left
    untouched, each image its own draw, the same generator seed giving the same batch (and the
    global RNG, which the trainer reseeds, when no generator is given). `seeds`: four ints."""
    import torch

    from conftest import gen
    for shape in shapes:
        x = random_images(16, *shape, seed=seeds[0])
        before = x.clone()
        out = policy(x, gen(seeds[1]))
        assert out.shape == x.shape and out.dtype == torch.uint8 and torch.equal(x, before) and not torch.equal(out, x)
    x = random_images(1, 3, 32, 32, seed=7).expand(64, -1, -1, -1).contiguous()
    out = policy(x, gen(seeds[2]))
    assert len({bytes(o.numpy()) for o in out}) >= 20  # each image draws its own
    assert torch.equal(out, policy(x, gen(seeds[2]))) and not torch.equal(out, policy(x, gen(seeds[3])))
    torch.manual_seed(2)
    a = policy(x)
    torch.manual_seed(2)
    assert torch.equal(a, policy(x))
    return x
