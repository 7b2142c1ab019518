"""Batched uint8 kernels for timm's RandAugment (timm_augment.py), with PIL's arithmetic and a
continuous magnitude per image.

batch_ops.py builds its sampling maps for the few (op, bin, sign) configurations a policy's
table can draw. timm draws the magnitude of every application from a normal distribution, so
here every image has its own affine matrix, computed on the device from its drawn parameters
(`timm_matrices`), and is resampled through it with PIL's bilinear or bicubic filter, chosen per
image (`pil_affine`); the colour ops take per-image arguments into per-image lookup tables and
blend factors (`timm_luts`). Same rules as batch_ops: a fixed sequence of tensor ops whatever the
batch size and the draw, nothing read back to the host, every value computed in the library's
own precision and evaluation order (doubles for geometry, C floats for the enhance blends).
"""
import math

import torch

import batch_ops

# CPython's math.radians(x) is x * (pi / 180), the constant rounded once.
DEG_TO_RAD = math.pi / 180.0


def _split(a):
    """Veltkamp's split of float64 a into a 26-bit high part and the rest (a = hi + lo exactly)."""
    c = a * 134217729.0  # 2 ** 27 + 1
    hi = c - (c - a)
    return hi, a - hi


_E15_HI, _E15_LO = _split(1e15)  # floats in, floats out: the same arithmetic as on tensors


def round15(v):
    """Python's round(v, 15) of a float64 tensor: the double nearest to v rounded (half to even)
    at 15 decimals. v * 1e15 is rounded in float64, so its exact error e (Dekker's product) decides
    which integer the exact product is nearest to; the quotient by 1e15 is then correctly rounded,
    as CPython's strtod of the rounded decimal is."""
    p = v * 1e15
    vh, vl = _split(v)
    e = vl * _E15_LO - (((p - vh * _E15_HI) - vl * _E15_HI) - vh * _E15_LO)  # v * 1e15 = p + e exactly
    n = torch.floor(p)
    t = ((p - n) - 0.5) + e  # the sign of (exact - n - 1/2): p - n is exact, and so is the sign of the sum
    odd = torch.remainder(n, 2.0) == 1.0
    return torch.where((t > 0) | ((t == 0) & odd), n + 1.0, n) / 1e15  # keeps the sign of -0.0


def rotate_matrix(degrees, H, W):
    """(a0, c, a2, a3, a5): PIL's Image.rotate(degrees) inverse affine matrix [a0, c, a2, a3, a0,
    a5] per image, in doubles: angle % 360 as Python computes it, -radians, cos and sin rounded to
    15 digits, and the centre (W / 2, H / 2) moved as rotate() moves it."""
    angle = torch.fmod(degrees, 360.0)
    angle = torch.where(angle < 0, angle + 360.0, angle)  # Python's float %: the sign of the divisor
    rad = -(angle * DEG_TO_RAD)
    cos, sin = round15(torch.cos(rad)), round15(torch.sin(rad))
    msin = -sin  # round(-sin(a), 15): rounding half to even is symmetric
    cx, cy = W / 2, H / 2
    a2 = cos * -cx + sin * -cy + 0.0 + cx
    a5 = msin * -cx + cos * -cy + 0.0 + cy
    return cos, sin, a2, msin, a5


def timm_matrices(kind, value, H, W):
    """(B, 6) float64 affine matrices, data for Image.transform(AFFINE), of timm's geometric ops:
    kind (B,) long, 0 none (identity), 1 Rotate, 2 ShearX, 3 ShearY, 4 TranslateX, 5 TranslateY;
    value (B,) float64 their argument: degrees, shear factor, or translation in pixels."""
    rot, shx, shy, tx, ty = (kind == k for k in range(1, 6))
    cos, sin, r2, msin, r5 = rotate_matrix(value, H, W)
    zero = torch.zeros_like(value)
    m0 = torch.where(rot, cos, 1.0)
    m1 = torch.where(rot, sin, torch.where(shx, value, zero))
    m2 = torch.where(rot, r2, torch.where(tx, value, zero))
    m3 = torch.where(rot, msin, torch.where(shy, value, zero))
    m5 = torch.where(rot, r5, torch.where(ty, value, zero))
    return torch.stack([m0, m1, m2, m3, m0, m5], 1)


def _cubic(v1, v2, v3, v4, d):
    # Pillow's BICUBIC macro (Geometry.c) in doubles and in its order: p1 = v2, p2 = -v1 + v3,
    # p3 = 2 * (v1 - v2) + v3 - v4, p4 = -v1 + v2 - v3 + v4, v = p1 + d * (p2 + d * (p3 + d * p4)).
    # x + (-y) is x - y exactly, so the negations are written as subtractions.
    p2 = v3 - v1
    p3 = (v1 - v2).mul_(2.0).add_(v3).sub_(v4)
    p4 = (v2 - v1).sub_(v3).add_(v4)
    return p4.mul_(d).add_(p3).mul_(d).add_(p2).mul_(d).add_(v2)


def _linear(a, b, d):
    # Pillow's BILINEAR macro: a + (b - a) * d
    return (b - a).mul_(d).add_(a)


def pil_affine(x, matrix, bicubic, fill, H, W):
    """Image.transform(size, AFFINE, matrix, BILINEAR or BICUBIC, fillcolor=fill) of every image of
    x (B, C, HW) uint8 at once: matrix (B, 6) float64, bicubic (B,) bool (else bilinear), fill a
    (C,) uint8 tensor. As Pillow's generic transform: the source point of output pixel (x, y) is
    (a0 (x + .5) + a1 (y + .5) + a2, a3 (x + .5) + a4 (y + .5) + a5); outside [0, W) x [0, H) it
    is the fill; else, minus .5, its floor and fraction pick the taps (clamped at the border) and
    weights: 4 x 4 taps, rows then the column (bicubic, a = -1, clipped, truncated), or the middle
    2 x 2 (bilinear, truncated). Both filters share one 16-tap gather."""
    B, C, HW = x.shape
    dev = x.device
    xs = (torch.arange(W, device=dev, dtype=torch.float64) + 0.5).view(1, 1, W)
    ys = (torch.arange(H, device=dev, dtype=torch.float64) + 0.5).view(1, H, 1)
    a = matrix.view(B, 6, 1, 1).unbind(1)
    xin = a[0] * xs + a[1] * ys + a[2]  # (B, H, W)
    yin = a[3] * xs + a[4] * ys + a[5]
    inside = ((xin >= 0) & (xin < W) & (yin >= 0) & (yin < H)).view(B, 1, HW)
    xin, yin = (xin - 0.5).view(B, HW), (yin - 0.5).view(B, HW)
    x0, y0 = torch.floor(xin), torch.floor(yin)
    dx, dy = (xin - x0).view(B, 1, 1, HW), (yin - y0).view(B, 1, HW)
    offsets = torch.arange(-1, 3, device=dev).view(1, 4, 1)
    cols = (x0.long().view(B, 1, HW) + offsets).clamp_(0, W - 1)  # (B, 4, HW)
    rows = (y0.long().view(B, 1, HW) + offsets).clamp_(0, H - 1)
    idx = (rows.unsqueeze(2) * W + cols.unsqueeze(1)).view(B, 1, 16 * HW)  # (row, column) taps
    taps = x.gather(2, idx.expand(B, C, 16 * HW)).view(B, C, 4, 4, HW).to(torch.int16)
    t = taps.unbind(3)  # four (B, C, 4 rows, HW), one per column
    # Along the rows the taps are integers: the p's are exact in int16, as in PIL's doubles.
    p4 = (t[1] - t[0]).sub_(t[2]).add_(t[3])
    p3 = (t[0] - t[1]).mul_(2).add_(t[2]).sub_(t[3])
    rows_v = p4.double().mul_(dx).add_(p3).mul_(dx).add_(t[2] - t[0]).mul_(dx).add_(t[1]).unbind(2)
    cubic = _cubic(*rows_v, dy).clamp_(0, 255)
    # bilinear runs along x first: top = row y0 between columns x0 and x0 + 1, then between rows
    (a, b), (c, d) = ((t[1][:, :, r], t[2][:, :, r]) for r in (1, 2))
    top = (b - a).double().mul_(dx.squeeze(1)).add_(a)
    bottom = (d - c).double().mul_(dx.squeeze(1)).add_(c)
    linear = _linear(top, bottom, dy)
    v = torch.where(bicubic.view(B, 1, 1), cubic, linear).to(torch.int32).to(torch.uint8)
    return torch.where(inside, v, fill.view(1, -1, 1))


def posterize_lut(levels, bits):
    """ImageOps.posterize(img, bits) per image: bits (B,) long in 0..8, levels (256,) long."""
    keep = 256 - torch.pow(2, 8 - bits.clamp(0, 8))  # ~(2 ** (8 - bits) - 1) within a byte
    return levels & keep.view(-1, 1, 1)


def solarize_lut(levels, threshold):
    """ImageOps.solarize(img, threshold) per image: levels at or above the threshold inverted."""
    return torch.where(levels < threshold.view(-1, 1, 1), levels, 255 - levels)


def solarize_add_lut(levels, add, threshold=128):
    """timm's solarize_add: min(255, i + add) below the threshold, i elsewhere."""
    return torch.where(levels < threshold, (levels + add.view(-1, 1, 1)).clamp(max=255), levels)


def brightness_lut(levels, factor):
    """ImageEnhance.Brightness per image: blend(black, img, factor) in C floats, truncated
    (batch_ops.pil_brightness_lut with a (B,) float32 factor)."""
    return batch_ops.u8((levels.float() * factor.view(-1, 1, 1) + 0.0).clamp(0, 255)).long()
