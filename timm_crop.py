"""timm's training crop, timm.data.transforms.RandomResizedCropAndInterpolation(size, scale=(0.8,
1.0), ratio=(3/4, 4/3), interpolation="random") (what timm's create_transform builds for CCT's
CIFAR configs), on both input paths.

timm's semantics, per image of height H and width W: up to 10 attempts, each drawing
target_area = H * W * uniform(scale) and a log-uniform aspect ratio in `ratio`, with
w = round(sqrt(target_area * aspect)), h = round(sqrt(target_area / aspect)) (Python's round, half
to even); the first attempt with w <= W and h <= H wins, and its offsets are i = randint(0, H - h),
j = randint(0, W - w), both ends included. When all 10 fail, timm takes a centred crop: the whole
image if W / H lies within [min(ratio), max(ratio)], else the full width with h = round(W /
min(ratio)) (image narrower than the ratios), or the full height with w = round(H * max(ratio))
(wider), at i = (H - h) // 2, j = (W - w) // 2. The interpolation is random.choice((bilinear,
bicubic)) per image for "random", else fixed. torchvision's resized_crop on a PIL image is then
img.crop((j, i, j + w, i + h)).resize((size, size), filter).

`TimmRandomResizedCrop` (the DataLoader-workers path) is timm's own transform. timm draws from
Python's `random` only; each call seeds it from torch's global RNG, which the loader seeds per
image (loaders._UInt8Dataset), and restores its state afterwards, as timm_augment.TimmRandAugment
does, so what an image gets depends only on (run seed, epoch, position).

`BatchTimmRandomResizedCrop` (the device path) draws the same distribution on the device (all 10
attempts for the whole batch at once, the first valid one picked with tensor ops) and resizes with
`pil_resized_crop`, Pillow's separable resampling (libImaging/Resample.c) reproduced bit for bit:
per output pixel, coefficients in doubles (support = filter support * max(scale, 1), centre
(x + 0.5) * scale, taps [trunc(centre - support + 0.5), trunc(centre + support + 0.5)) cut at the
edges, normalised by their sum), converted to 22-bit fixed point rounding half away from zero,
accumulated from 1 << 21 and clipped to 0..255 after the first pass and again after the second.
The horizontal pass goes first, except that since Pillow 13 the vertical one does when the height
shrinks by more than twice as many pixels as the width (`vertical_first`; a crop can do that only
when size < H, and then both orders are computed and each image takes its own). The crop's w and
h differ per image, so each image gets its own (size, W) and (size, H) matrices of those integer
coefficients, zero outside its taps, built on the device; the passes are batched float64
matmuls, exact because every partial sum is an integer below 2**53.
Where Pillow skips a pass (the crop already has the output's width or height) the matrix is the
identity, which gives the same pixels. A fixed sequence of tensor ops whatever the batch and the
draw, nothing read back to the host; it needs float64 (CUDA, CPU).

What is not timm's stream: the device path draws its own random numbers (torch's, not Python's
Mersenne Twister), so it matches timm in distribution, not image for image; its log-uniform ratio
goes through torch.exp, which may differ from libm's exp in the last bit, and its randint through
floor(u * n), uniform to within 2**-53. Given the same box and filter the pixels are Pillow's.
"""
import math
import random

import PIL
import torch

from utils import UserError

INTERPOLATIONS = ("random", "bilinear", "bicubic")
ATTEMPTS = 10  # get_params' attempts before its fallback
PRECISION_BITS = 32 - 8 - 2  # Resample.c: 8 bits of result, 2 for the overshoot of negative lobes
SUPPORT = {False: 1.0, True: 2.0}  # Pillow's filter supports: bilinear, bicubic
BICUBIC_A = -0.5  # Pillow's bicubic_filter a (Geometry.c's affine bicubic uses -1; the resize -0.5)
PILLOW13 = int(PIL.__version__.split(".")[0]) >= 13  # the pass order changed (vertical_first)


def _check_settings(size, scale, ratio, interpolation):
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise UserError(f"timm crop: size must be a positive integer, got {size!r}")
    try:
        lo, hi = (float(s) for s in scale)
        rlo, rhi = (float(r) for r in ratio)
    except (TypeError, ValueError):
        raise UserError(f"timm crop: scale and ratio must be (min, max) pairs, got {scale!r} and {ratio!r}") from None
    if not 0 < lo <= hi <= 1:
        raise UserError(f"timm crop: scale (fractions of the image area) must satisfy 0 < min <= max <= 1, "
                        f"got {scale!r}")
    if not (0 < rlo <= rhi and math.isfinite(rhi)):
        raise UserError(f"timm crop: ratio must satisfy 0 < min <= max (width / height), got {ratio!r}")
    if interpolation not in INTERPOLATIONS:
        raise UserError(f"timm crop: interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
    return (lo, hi), (rlo, rhi)


def fallback_box(height, width, ratio):
    """get_params' central crop (i, j, h, w) when all its attempts fail: Python ints from the image
    size and min/max of `ratio`."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


# ---------------------------------------------------------------- workers path: timm itself

class TimmRandomResizedCrop:
    """timm's RandomResizedCropAndInterpolation on PIL images, reproducible from torch's global RNG."""

    def __init__(self, size, scale=(0.8, 1.0), ratio=(3 / 4, 4 / 3), interpolation="random"):
        from timm.data.transforms import RandomResizedCropAndInterpolation

        self.scale, self.ratio = _check_settings(size, scale, ratio, interpolation)
        self.size, self.interpolation = size, interpolation
        self.transform = RandomResizedCropAndInterpolation(size, scale=self.scale, ratio=self.ratio,
                                                           interpolation=interpolation)

    def __call__(self, img):
        # timm's get_params and random.choice use Python's global `random`, nothing else.
        seed = int(torch.randint(0, 2**63 - 1, ()))
        state = random.getstate()
        random.seed(seed)
        try:
            return self.transform(img)
        finally:
            random.setstate(state)

    def __repr__(self):
        return (f"{type(self).__name__}(size={self.size}, scale={self.scale}, ratio={self.ratio}, "
                f"interpolation={self.interpolation!r})")


# ---------------------------------------------------------------- device path: Pillow's resize

def _filters(arg, bicubic):
    """Pillow's bilinear_filter or bicubic_filter (a = -0.5) of float64 `arg`, per image, in its
    evaluation order."""
    x = arg.abs()
    bilinear = torch.where(x < 1.0, 1.0 - x, 0.0)
    inner = ((BICUBIC_A + 2.0) * x - (BICUBIC_A + 3.0)) * x * x + 1.0
    outer = (((x - 5.0) * x + 8.0) * x - 4.0) * BICUBIC_A
    cubic = torch.where(x < 1.0, inner, torch.where(x < 2.0, outer, 0.0))
    return torch.where(bicubic, cubic, bilinear)


def pil_coefficients(start, length, bicubic, in_size, size):
    """(B, size, in_size) float64: Pillow's fixed-point resize coefficients (integers) mapping an
    axis of `in_size` pixels to `size`, for the crop [start, start + length) of each image, zero
    outside its taps. start, length (B,) integer tensors; bicubic (B,) bool."""
    dev = start.device
    scale = length.double() / size  # (double)(in1 - in0) / outSize, in0 = 0
    filterscale = scale.clamp(min=1.0)
    support = torch.where(bicubic, SUPPORT[True], SUPPORT[False]) * filterscale
    inv = 1.0 / filterscale
    # The most taps any crop of this axis can need: Pillow's ksize at the largest support.
    taps = int(math.ceil(SUPPORT[True] * max(in_size / size, 1.0))) * 2 + 1
    center = (torch.arange(size, device=dev, dtype=torch.float64) + 0.5) * scale[:, None]  # (B, size)
    support, inv = support[:, None], inv[:, None, None]
    # (int) truncates; xmin below 0 is clamped to 0 either way, xmax is positive.
    xmin = torch.trunc(center - support + 0.5).clamp(min=0.0)
    xmax = torch.minimum(torch.trunc(center + support + 0.5), length.double()[:, None])
    t = torch.arange(taps, device=dev, dtype=torch.float64)
    # filter((x + xmin - center + 0.5) * ss), x + xmin an int; taps past xmax - xmin do not exist.
    arg = ((t + xmin[..., None]) - center[..., None] + 0.5) * inv
    k = torch.where(t < (xmax - xmin)[..., None], _filters(arg, bicubic[:, None, None]), 0.0)
    total = k[..., 0]
    for n in range(1, taps):  # Pillow's sum, in its order: a tree sum can round differently
        total = total + k[..., n]
    total = total[..., None]
    k = torch.where(total != 0.0, k / total, k)
    # normalize_coeffs_8bpc: (int)(+-0.5 + k * (1 << PRECISION_BITS)), half away from zero.
    k = k * float(1 << PRECISION_BITS)
    k = torch.trunc(torch.where(k < 0, k - 0.5, k + 0.5))
    # Scatter the taps to source pixels: pixel p of the full axis is tap p - start - xmin.
    p = torch.arange(in_size, device=dev)
    tap = p - start[:, None, None] - xmin.long()[..., None]  # (B, size, in_size)
    inside = (tap >= 0) & (tap < taps)
    return torch.where(inside, k.gather(2, tap.clamp(0, taps - 1)), 0.0)


def _clip8(acc):
    # clip8: (ss >> PRECISION_BITS) clamped to 0..255, the accumulator started at 1 << 21.
    return torch.floor((acc + float(1 << (PRECISION_BITS - 1))) * (1.0 / (1 << PRECISION_BITS))).clamp_(0.0, 255.0)


def vertical_first(height, width, size):
    """(B,) bool: where Pillow 13 resizes a (height, width) crop to (size, size) with the vertical
    pass first (python-pillow/Pillow#9549: when the height shrinks by more than twice as many
    pixels as the width does), measured on Pillow 13 (tests/test_timm_crop.py checks it). Earlier
    Pillows always run the horizontal pass first."""
    return (height > size) & (2 * (width - size) < height - size)


def pil_resized_crop(x, top, left, height, width, bicubic, size, pillow13=PILLOW13):
    """Each image of x (B, C, H, W) uint8 cropped to its box [top, top + height) x [left, left +
    width) and resized to (size, size) as Pillow's img.crop(box).resize((size, size), BILINEAR or
    BICUBIC) does, bit for bit: top, left, height, width (B,) integer tensors (boxes inside the
    image), bicubic (B,) bool; `pillow13`: the pass order of Pillow 13 and later (default: the
    installed Pillow's). Returns (B, C, size, size) uint8."""
    B, C, H, W = x.shape
    horizontal = pil_coefficients(left, width, bicubic, W, size).transpose(1, 2).unsqueeze(1)  # (B, 1, W, size)
    vertical = pil_coefficients(top, height, bicubic, H, size).unsqueeze(1)  # (B, 1, size, H)
    xd = x.double()
    # Horizontal pass over every row (rows outside the box get no vertical weight), clip, vertical.
    out = _clip8(torch.matmul(vertical, _clip8(torch.matmul(xd, horizontal))))
    if pillow13 and H > size:  # static: only a crop taller than the output can go vertical first
        swapped = _clip8(torch.matmul(_clip8(torch.matmul(vertical, xd)), horizontal))
        out = torch.where(vertical_first(height, width, size).view(B, 1, 1, 1), swapped, out)
    return out.to(torch.uint8)


# ---------------------------------------------------------------- device path: the draw

class BatchTimmRandomResizedCrop:
    """timm's RandomResizedCropAndInterpolation on (B, C, H, W) uint8 batches, a box and a filter
    drawn per image on the device; returns (B, C, size, size) uint8.

    `draw` gives, each (B,): top, left, height, width (long) and bicubic (bool)."""

    def __init__(self, size, scale=(0.8, 1.0), ratio=(3 / 4, 4 / 3), interpolation="random"):
        self.scale, self.ratio = _check_settings(size, scale, ratio, interpolation)
        self.size, self.interpolation = size, interpolation
        self.log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))

    def to(self, device):
        """Holds no tensors: everything is made on the batch's device."""
        return self

    def draw(self, batch_size, height, width, device=None, generator=None):
        """Per-image boxes for (height, width) images, drawn on `device` (default: the generator's,
        else the CPU) from `generator` (None: that device's global RNG)."""
        if device is None:
            device = generator.device if generator is not None else torch.device("cpu")
        u = torch.rand((2 * ATTEMPTS + 3, batch_size), dtype=torch.float64, device=device, generator=generator)
        (lo, hi), (rlo, rhi) = self.scale, self.log_ratio
        # random.uniform(a, b) is a + (b - a) * random(), as here.
        target_area = (lo + (hi - lo) * u[:ATTEMPTS]) * float(height * width)
        aspect = torch.exp(rlo + (rhi - rlo) * u[ATTEMPTS:2 * ATTEMPTS])
        w = torch.round(torch.sqrt(target_area * aspect)).long()  # (ATTEMPTS, B); round half to even
        h = torch.round(torch.sqrt(target_area / aspect)).long()
        valid = (w <= width) & (h <= height)
        first = valid.to(torch.uint8).argmax(0, keepdim=True)  # the first maximum: the first valid attempt
        found = valid.any(0)
        fi, fj, fh, fw = fallback_box(height, width, self.ratio)
        h = torch.where(found, h.gather(0, first)[0], fh)
        w = torch.where(found, w.gather(0, first)[0], fw)
        # randint(0, n - 1) inclusive as floor(u * n); only the winning attempt draws offsets.
        span_h, span_w = height - h + 1, width - w + 1
        i = torch.minimum((u[2 * ATTEMPTS] * span_h).long(), span_h - 1)
        j = torch.minimum((u[2 * ATTEMPTS + 1] * span_w).long(), span_w - 1)
        i, j = torch.where(found, i, fi), torch.where(found, j, fj)
        coin = u[2 * ATTEMPTS + 2]
        bicubic = {"random": coin < 0.5, "bicubic": coin < 2.0, "bilinear": coin > 2.0}[self.interpolation]
        return {"top": i, "left": j, "height": h, "width": w, "bicubic": bicubic}

    def _check(self, images):
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            dtype = images.dtype if isinstance(images, torch.Tensor) else ""
            raise ValueError(f"expected a uint8 (B, C, H, W) tensor, got {dtype} {shape}")

    @torch.no_grad()
    def apply(self, images, params):
        """`images` cropped and resized with the drawn `params` (a new tensor)."""
        self._check(images)
        return pil_resized_crop(images, params["top"], params["left"], params["height"], params["width"],
                                params["bicubic"], self.size)

    @torch.no_grad()
    def __call__(self, images, generator=None):
        self._check(images)
        B, _, H, W = images.shape
        if generator is None or generator.device == images.device:
            params = self.draw(B, H, W, images.device, generator)
        else:
            # A generator on another device still works, at the cost of copying the parameters.
            params = {k: v.to(images.device, non_blocking=True)
                      for k, v in self.draw(B, H, W, generator.device, generator).items()}
        return self.apply(images, params)

    def __repr__(self):
        return (f"{type(self).__name__}(size={self.size}, scale={self.scale}, ratio={self.ratio}, "
                f"interpolation={self.interpolation!r})")
