"""Batched augmentations that run on whatever device the batch is on.

The input pipeline has three stages (data.py wires them together):
  1. uint8 per-image geometry and colour: random crop with padding, flip, and a policy
     (AutoAugment / RandAugment / TrivialAugment). Either on the device (batched, below and
     in autoaugment.py) or in DataLoader workers with torchvision's PIL transforms.
  2. float per-image extras on the normalised batch: RandomCropPaste, Cutout, random erasing,
     resizing to --image-size. Always here, on the device, for both input paths.
  3. batch mixing in the training step: Mixup / CutMix.

Every random draw comes from an explicit CPU `torch.Generator` (reseeded each epoch by the
loader), so a resumed run draws exactly what an uninterrupted run would have drawn, and the
device never has to tell the host what it drew.
"""
import math

import torch
import torch.nn.functional as F
import torchvision.transforms as T

from utils import Registry


def _uniform(n, generator, low=0.0, high=1.0):
    return torch.rand(n, generator=generator) * (high - low) + low


def _beta(alpha, n, generator):
    # torch.distributions cannot take a generator; Beta(a, a) = Ga / (Ga + Gb).
    ga = torch._standard_gamma(torch.full((n,), float(alpha)), generator=generator)
    gb = torch._standard_gamma(torch.full((n,), float(alpha)), generator=generator)
    return ga / (ga + gb)


def _device_generator(generator, device):
    """A generator on `device` seeded from the CPU one: bulk noise is drawn where it is used
    instead of being drawn on the host and copied over."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


# ---------------------------------------------------------------- stage 1: uint8, per image

def random_crop(x, padding, generator):
    """torchvision's RandomCrop(size, padding, fill=0) with an independent offset per image."""
    if padding <= 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    top = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(x.device, non_blocking=True)
    left = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(x.device, non_blocking=True)
    rows = (top[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # B,1,H,1
    cols = (left[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # B,1,1,W
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def random_hflip(x, generator, p=0.5):
    flip = (torch.rand(x.shape[0], generator=generator) < p).to(x.device, non_blocking=True)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


# ---------------------------------------------------------------- stage 2: float, per image

def _boxes(b, h, w, box_h, box_w, generator):
    """Top-left corners of boxes of the given per-image sizes, placed uniformly inside the image."""
    top = (torch.rand(b, generator=generator) * (h - box_h + 1)).long()
    left = (torch.rand(b, generator=generator) * (w - box_w + 1)).long()
    return top, left


def _box_mask(h, w, top, left, box_h, box_w, device):
    ys = torch.arange(h, device=device)[None, :, None]
    xs = torch.arange(w, device=device)[None, None, :]
    top, left, box_h, box_w = (t.to(device, non_blocking=True)[:, None, None] for t in (top, left, box_h, box_w))
    return (ys >= top) & (ys < top + box_h) & (xs >= left) & (xs < left + box_w)  # B,H,W


class RandomCropPaste:
    """ViT-CIFAR's RandomCropPaste: a random crop of each image, flipped with probability
    `flip_p`, blended into another random place of the same image: lam * back + (1-lam) * crop,
    with lam ~ Beta(alpha, alpha) and the crop's side sqrt(1 - lam) of the image's."""

    def __init__(self, alpha=1.0, flip_p=0.5):
        self.alpha, self.flip_p = alpha, flip_p

    def __call__(self, x, generator):
        b, _, h, w = x.shape
        lam = _beta(self.alpha, b, generator)
        side = torch.sqrt(1.0 - lam)
        box_h = (side * h).long().clamp(min=1)
        box_w = (side * w).long().clamp(min=1)
        f_top, f_left = _boxes(b, h, w, box_h, box_w, generator)
        b_top, b_left = _boxes(b, h, w, box_h, box_w, generator)
        flip = torch.rand(b, generator=generator) < self.flip_p
        dev = x.device
        inside = _box_mask(h, w, b_top, b_left, box_h, box_w, dev)
        # For each pixel of the back box, the pixel of the front crop that lands on it.
        ys = torch.arange(h, device=dev)[None, :, None] - b_top.to(dev, non_blocking=True)[:, None, None]
        xs = torch.arange(w, device=dev)[None, None, :] - b_left.to(dev, non_blocking=True)[:, None, None]
        flip, box_w_dev = flip.to(dev, non_blocking=True), box_w.to(dev, non_blocking=True)
        xs = torch.where(flip[:, None, None], box_w_dev[:, None, None] - 1 - xs, xs)
        src_y = (f_top.to(dev, non_blocking=True)[:, None, None] + ys).clamp(0, h - 1)
        src_x = (f_left.to(dev, non_blocking=True)[:, None, None] + xs).clamp(0, w - 1)
        src = (src_y * w + src_x).flatten(1)  # B, H*W
        front = x.flatten(2).gather(2, src[:, None, :].expand(-1, x.shape[1], -1)).view_as(x)
        lam = lam.to(dev, x.dtype, non_blocking=True)[:, None, None, None]
        return torch.where(inside[:, None], lam * x + (1 - lam) * front, x)


class Cutout:
    """Cutout (DeVries & Taylor 2017): a `size` x `size` square, centred uniformly and clipped at
    the border, set to 0 (the dataset mean after normalisation) in each image."""

    def __init__(self, size=16):
        self.size = size

    def __call__(self, x, generator):
        b, _, h, w = x.shape
        cy = torch.randint(0, h, (b,), generator=generator)
        cx = torch.randint(0, w, (b,), generator=generator)
        top, left = (cy - self.size // 2).clamp(min=0), (cx - self.size // 2).clamp(min=0)
        bottom, right = (cy + self.size - self.size // 2).clamp(max=h), (cx + self.size - self.size // 2).clamp(max=w)
        mask = _box_mask(h, w, top, left, bottom - top, right - left, x.device)
        return x.masked_fill(mask[:, None], 0.0)


class RandomErasing:
    """Random erasing (Zhong et al. 2020) with torchvision's defaults: with probability p, a box
    of area scale (0.02, 0.33) and aspect ratio (0.3, 3.3) filled with N(0, 1) noise. One draw
    per image, clamped to the image (torchvision retries up to 10 times instead)."""

    def __init__(self, p=0.25, scale=(0.02, 0.33), ratio=(0.3, 3.3)):
        self.p, self.scale, self.ratio = p, scale, ratio

    def __call__(self, x, generator):
        b, c, h, w = x.shape
        area = _uniform(b, generator, *self.scale) * h * w
        log_ratio = _uniform(b, generator, math.log(self.ratio[0]), math.log(self.ratio[1]))
        ratio = torch.exp(log_ratio)
        box_h = torch.sqrt(area * ratio).round().long().clamp(1, h)
        box_w = torch.sqrt(area / ratio).round().long().clamp(1, w)
        top, left = _boxes(b, h, w, box_h, box_w, generator)
        apply = (torch.rand(b, generator=generator) < self.p).to(x.device, non_blocking=True)
        noise = torch.randn(x.shape, generator=_device_generator(generator, x.device), device=x.device, dtype=x.dtype)
        mask = _box_mask(h, w, top, left, box_h, box_w, x.device) & apply[:, None, None]
        return torch.where(mask[:, None], noise, x)


# ---------------------------------------------------------------- stage 3: batch mixing

class MixUp:
    """Mixup (Zhang et al. 2018), as ViT-CIFAR: one lam ~ Beta(alpha, alpha) for the batch,
    mixed with a shuffled copy of itself."""

    def __init__(self, alpha=1.0):
        self.alpha = alpha

    def __call__(self, x, y, generator):
        lam = float(_beta(self.alpha, 1, generator))
        perm = torch.randperm(x.shape[0], generator=generator).to(x.device, non_blocking=True)
        return lam * x + (1 - lam) * x[perm], y, y[perm], lam


class CutMix:
    """CutMix (Yun et al. 2019), as ViT-CIFAR: one box of side sqrt(1 - lam) pasted from a
    shuffled copy of the batch; lam is then recomputed from the box's clipped area."""

    def __init__(self, beta=1.0):
        self.beta = beta

    def __call__(self, x, y, generator):
        _, _, h, w = x.shape
        lam = float(_beta(self.beta, 1, generator))
        perm = torch.randperm(x.shape[0], generator=generator).to(x.device, non_blocking=True)
        cy, cx = (float(v) for v in torch.rand(2, generator=generator) * torch.tensor([h, w]))
        half_h, half_w = h * math.sqrt(1 - lam) / 2, w * math.sqrt(1 - lam) / 2
        y1, y2 = int(max(cy - half_h, 0)), int(min(cy + half_h, h))
        x1, x2 = int(max(cx - half_w, 0)), int(min(cx + half_w, w))
        x = x.clone()
        x[:, :, y1:y2, x1:x2] = x[perm, :, y1:y2, x1:x2]
        lam = 1 - (y2 - y1) * (x2 - x1) / (h * w)
        return x, y, y[perm], lam


class BatchMixer:
    """Applies one of the given mixers to a batch with probability `prob` (picking uniformly
    among them when several are on). Returns (x, y_a, y_b or None, lam)."""

    def __init__(self, mixers, prob=1.0):
        self.mixers, self.prob = mixers, prob

    def __call__(self, x, y, generator):
        draw = torch.rand(2, generator=generator)
        if not self.mixers or float(draw[0]) >= self.prob:
            return x, y, None, 1.0
        mixer = self.mixers[min(int(float(draw[1]) * len(self.mixers)), len(self.mixers) - 1)]
        return mixer(x, y, generator)


# ---------------------------------------------------------------- policies by name

# Each policy: (torchvision PIL transform for the DataLoader path, batched builder for the
# device path). The batched ones live in autoaugment.py.
POLICIES = Registry("augmentation policy")


def _register_policies():
    import autoaugment as aa

    aa_policy = {"cifar10": T.AutoAugmentPolicy.CIFAR10, "svhn": T.AutoAugmentPolicy.SVHN,
                 "imagenet": T.AutoAugmentPolicy.IMAGENET}
    POLICIES.register("autoaugment", lambda args: (T.AutoAugment(aa_policy[args.aa_policy]),
                                                   aa.BatchAutoAugment(args.aa_policy)))
    POLICIES.register("randaugment", lambda args: (T.RandAugment(args.ra_n, args.ra_m),
                                                   aa.BatchRandAugment(args.ra_n, args.ra_m)))
    POLICIES.register("trivialaugment", lambda args: (T.TrivialAugmentWide(), aa.BatchTrivialAugmentWide()))


def build_policy(args):
    """(PIL transform, batched transform) for args.policy, or (None, None)."""
    if args.policy == "none":
        return None, None
    if not len(POLICIES.names()):
        _register_policies()
    return POLICIES.build(args.policy, args)


def build_extras(args):
    """The float-stage extras selected by flags, in the order they are applied."""
    extras = []
    if args.rcpaste:
        extras.append(RandomCropPaste())
    if args.cutout > 0:
        extras.append(Cutout(args.cutout))
    if args.random_erasing > 0:
        extras.append(RandomErasing(args.random_erasing))
    return extras


def build_mixer(args):
    mixers = []
    if args.mixup:
        mixers.append(MixUp(args.mixup_alpha))
    if args.cutmix:
        mixers.append(CutMix(args.cutmix_beta))
    return BatchMixer(mixers, args.mix_prob) if mixers else None
