"""Stage 2 of the input pipeline (see augment.py): float per-image extras on the normalised
batch, on either input path: RandomCropPaste, Cutout, and random erasing in torchvision's form or
in Zhong et al.'s own. The same rules as augment.py: random numbers drawn on the batch's device
from `generator`, a fixed sequence of tensor ops per call, nothing read back to the host.
"""
import math

import torch

from augment import _below, _beta, _box_mask
from utils import UserError

class RandomCropPaste:
    """ViT-CIFAR's `--rcpaste`, per image: a box is cut from the image, flipped with probability
    `flip_p`, the whole image is then flipped with probability `image_flip_p`, and the box is
    blended into a random place of it as region * a + box * (1 - a), a ~ U(0, 1).

    The box is CutMix's: lam ~ Beta(alpha, alpha), side int(S * sqrt(1 - lam)), centred on a
    uniform pixel and clipped at the border (so often smaller than that side, and empty when the
    side is 0 or 1). The paste corner is numpy's randint(0, S - side), exclusive, so a pasted box
    never touches the last row or column unless it spans the image. The blend weight does not
    depend on lam: lam only sets the box's size.

    `draw` returns the raw per-image draws, `geometry` the boxes they give, `apply` the result;
    `__call__` is `apply(x, draw(x))`.
    """

    def __init__(self, alpha=1.0, flip_p=0.5, image_flip_p=0.5):
        self.alpha, self.flip_p, self.image_flip_p = alpha, flip_p, image_flip_p

    def draw(self, x, generator=None):
        b, dev = x.shape[0], x.device
        lam = _beta(self.alpha, (b,), dev, generator)
        u = torch.rand(7, b, device=dev, generator=generator)
        return {"lam": lam, "u_cx": u[0], "u_cy": u[1], "u_px": u[2], "u_py": u[3],
                "flip_front": u[4] < self.flip_p, "flip_image": u[5] < self.image_flip_p, "weight": u[6]}

    @staticmethod
    def geometry(params, h, w):
        """Per-image source box (x1, y1, bw, bh) and paste corner (px, py), as long tensors."""
        cut_rat = torch.sqrt(1.0 - params["lam"])
        out = {}
        for axis, size, u_c, u_p in (("x", w, "u_cx", "u_px"), ("y", h, "u_cy", "u_py")):
            half = (size * cut_rat).long() // 2
            centre = _below(params[u_c], size)
            lo, hi = (centre - half).clamp(0, size), (centre + half).clamp(0, size)
            extent = hi - lo
            # randint(0, size - extent) needs a positive bound; a box spanning the image sits at 0.
            out[axis + "1"], out["b" + ("w" if axis == "x" else "h")] = lo, extent
            out["p" + axis] = _below(params[u_p], (size - extent).clamp(min=1))
        return out

    def apply(self, x, params):
        b, c, h, w = x.shape
        g = self.geometry(params, h, w)
        dev = x.device
        base = torch.where(params["flip_image"][:, None, None, None], x.flip(-1), x)
        dy = torch.arange(h, device=dev)[None, :, None] - g["py"][:, None, None]  # B,H,1
        dx = torch.arange(w, device=dev)[None, None, :] - g["px"][:, None, None]  # B,1,W
        bh, bw = g["bh"][:, None, None], g["bw"][:, None, None]
        inside = (dy >= 0) & (dy < bh) & (dx >= 0) & (dx < bw)  # B,H,W
        dx = torch.where(params["flip_front"][:, None, None], bw - 1 - dx, dx)
        # The box is cut from the image before the whole-image flip, as in the original.
        src_y = (g["y1"][:, None, None] + dy).clamp(0, h - 1)
        src_x = (g["x1"][:, None, None] + dx).clamp(0, w - 1)
        src = (src_y * w + src_x).flatten(1)  # B, H*W
        front = x.flatten(2).gather(2, src[:, None, :].expand(-1, c, -1)).view_as(x)
        a = params["weight"].to(x.dtype)[:, None, None, None]
        return torch.where(inside[:, None], base * a + front * (1 - a), base)

    def __call__(self, x, generator=None):
        return self.apply(x, self.draw(x, generator))


class Cutout:
    """Cutout (DeVries & Taylor 2017): a `size` x `size` square, centred uniformly and clipped at
    the border, set to 0 (the dataset mean after normalisation) in each image."""

    def __init__(self, size=16):
        self.size = size

    def __call__(self, x, generator=None):
        b, _, h, w = x.shape
        u = torch.rand(2, b, device=x.device, generator=generator)
        cy, cx = _below(u[0], h), _below(u[1], w)
        top, left = (cy - self.size // 2).clamp(min=0), (cx - self.size // 2).clamp(min=0)
        bottom = (cy + self.size - self.size // 2).clamp(max=h)
        right = (cx + self.size - self.size // 2).clamp(max=w)
        mask = _box_mask(h, w, top, left, bottom - top, right - left)
        return x.masked_fill(mask[:, None], 0.0)


class RandomErasing:
    """Random erasing (Zhong et al. 2020) with torchvision's defaults: with probability p, a box
    of area scale (0.02, 0.33) and aspect ratio (0.3, 3.3) filled with N(0, 1) noise. One draw
    per image, clamped to the image (torchvision retries up to 10 times instead: a retry loop
    would need the host to see the draws)."""

    def __init__(self, p=0.25, scale=(0.02, 0.33), ratio=(0.3, 3.3)):
        self.p, self.scale, self.ratio = p, scale, ratio

    def __call__(self, x, generator=None):
        b, c, h, w = x.shape
        u = torch.rand(5, b, device=x.device, generator=generator)
        area = (u[0] * (self.scale[1] - self.scale[0]) + self.scale[0]) * (h * w)
        lo, hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        ratio = torch.exp(u[1] * (hi - lo) + lo)
        box_h = torch.sqrt(area * ratio).round().long().clamp(1, h)
        box_w = torch.sqrt(area / ratio).round().long().clamp(1, w)
        top, left = _below(u[2], h - box_h + 1), _below(u[3], w - box_w + 1)
        noise = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
        mask = _box_mask(h, w, top, left, box_h, box_w) & (u[4] < self.p)[:, None, None]
        return torch.where(mask[:, None], noise, x)


class ZhongErasing:
    """Random erasing as Zhong et al.'s own code does it (their RandomErasing, which SPT-LSA's
    utils/random_erasing.py keeps, and which differs from torchvision's): with probability p, up
    to 100 attempts, each of area uniform(sl, sh) x H x W and aspect ratio uniform(r1, 1 / r1)
    (uniform, not log-uniform), h = round(sqrt(area * aspect)), w = round(sqrt(area / aspect));
    the first with h < H and w < W (strictly) is placed at a uniform offset (both ends included)
    and filled with `value`, one number per channel: the source passes the dataset's mean and
    erases after Normalize, so the box holds those numbers in normalised units. When no attempt
    fits, the image is left as it is. All attempts are drawn at once and the first that fits is
    picked with tensor ops (the source stops at it; its later attempts are never used)."""

    ATTEMPTS = 100

    def __init__(self, p=0.25, value=(0.4914, 0.4822, 0.4465), sl=0.02, sh=0.4, r1=0.3):
        self.p, self.sl, self.sh, self.r1 = p, sl, sh, r1
        self.value = tuple(float(v) for v in value)

    def __call__(self, x, generator=None):
        b, c, h, w = x.shape
        n = self.ATTEMPTS
        # float64 as Python's random: the rounding of sqrt(area * aspect) decides the box size.
        u = torch.rand(2 * n + 3, b, dtype=torch.float64, device=x.device, generator=generator)
        area = (self.sl + (self.sh - self.sl) * u[:n]) * (h * w)
        aspect = self.r1 + (1 / self.r1 - self.r1) * u[n:2 * n]
        box_h = torch.sqrt(area * aspect).round().long()  # round half to even, as Python's round
        box_w = torch.sqrt(area / aspect).round().long()
        fits = (box_h < h) & (box_w < w)
        first = fits.to(torch.uint8).argmax(0, keepdim=True)  # argmax returns the first maximum
        box_h, box_w = box_h.gather(0, first)[0], box_w.gather(0, first)[0]
        top, left = _below(u[2 * n], h - box_h + 1), _below(u[2 * n + 1], w - box_w + 1)
        erase = fits.any(0) & (u[2 * n + 2] < self.p)
        mask = _box_mask(h, w, top, left, box_h, box_w) & erase[:, None, None]
        value = self.value[:c] if c <= len(self.value) else self.value[:1] * c
        # Filled on the device from Python floats (a kernel argument each): a tensor made on the
        # host would be a blocking copy every batch.
        fill = torch.stack([x.new_full((), v) for v in value]).view(1, c, 1, 1)
        return torch.where(mask[:, None], fill, x)


ERASING_STYLES = ("torchvision", "zhong")


def build_extras(*, rcpaste=False, cutout=0, random_erasing=0.0, erasing_style="torchvision", mean=None):
    """The float-stage extras that are on, in the order they are applied: RandomCropPaste,
    Cutout(cutout) when cutout > 0, random erasing with probability random_erasing when > 0
    (torchvision's defaults, or Zhong et al.'s code filling with `mean`, the dataset's)."""
    if erasing_style not in ERASING_STYLES:
        raise UserError(f"unknown erasing style {erasing_style!r}; choose from: {', '.join(ERASING_STYLES)}")
    extras = []
    if rcpaste:
        extras.append(RandomCropPaste())
    if cutout > 0:
        extras.append(Cutout(cutout))
    if random_erasing > 0 and erasing_style == "zhong":
        extras.append(ZhongErasing(random_erasing, **({"value": tuple(mean)} if mean is not None else {})))
    elif random_erasing > 0:
        extras.append(RandomErasing(random_erasing))
    return extras
