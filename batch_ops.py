"""Batched uint8 image kernels for the device path of autoaugment.py's policies.

Plain functions of tensors over (B, C, H * W) batches with per-image parameters, and the builders
of the constant tables they take. `pil_*` reproduce PIL's arithmetic (the original AutoAugment's
ops), `tv_*` torchvision's tensor ops, the rest serve both: exactly, bit for bit, so each evaluates
in the library's own precision and order (C floats or doubles, truncating casts, no fused
multiply-add); the comments say where that matters.

Each is a fixed sequence of tensor ops whatever the batch size and whatever was drawn: no Python
loop over images, nothing that reads a device value on the host, no data-dependent shapes, no
host-to-device copies once the tables are on the batch's device; per-image choices are gathers from
small tables and `torch.where` selections, not branches. So a call never makes the host wait for
the device (no syncs), torch.compile traces it into one static graph, and its cost and op count do
not depend on the batch size or on the draw (autoaugment.count_ops, bench.py --audit).

A policy's op slot runs three stages over the whole batch; each image goes through the one stage
its op belongs to while the other two leave it exactly as it is:

  1. `resample`: ShearX/Y, TranslateX/Y, Rotate. The sampling maps depend only on (op, bin, sign)
     and the image size, so they are built for the few configurations a slot can draw (never for
     each image) and each image gathers through its own configuration's map;
  2. `lut_stage`: a per-(image, channel) 256-entry lookup table: Posterize, Solarize, Invert,
     Brightness, Contrast, AutoContrast, Equalize (statistics from batched reductions and a
     batched histogram);
  3. a blend with a `degenerate` image: Color (grey), Sharpness (3x3 smooth).
"""
import math

import torch
import torch.nn.functional as F
from torchvision.transforms.functional import _get_inverse_affine_matrix


def u8(v):
    """Float values already clamped to [0, 255] to uint8, truncating as PIL's casts do. Through int16
    because it is several times faster than a direct float-to-uint8 conversion on the CPU."""
    return v.to(torch.int16).to(torch.uint8)


# ---------------------------------------------------------------- geometry

def resample(x, maps, frac, cfg, fill):
    """Each image of x (B, C, HW) gathered through the map of its configuration `cfg` (B,) from
    `maps` (n, HW) nearest or (n, 4 * HW) bicubic taps with fractions `frac` (n, HW)."""
    B, C, HW = x.shape
    idx = maps.index_select(0, cfg).unsqueeze(1)  # 2-D index_select: much faster than 3-D
    src = F.pad(x, (0, 1), value=fill)  # index HW is the fill pixel
    if frac is None:
        return src.gather(2, idx.expand(B, C, HW))
    # One gather for the four taps of every pixel: (B, C, 4 * HW).
    taps = src.to(torch.int16).gather(2, idx.expand(B, C, 4 * HW))
    return cubic(taps.view(B, C, 4, HW), frac.index_select(0, cfg).unsqueeze(1))


def cubic(taps, d):
    """PIL's 4-tap cubic (a = -1) along one axis, in float64 and in PIL's evaluation order so that
    it truncates exactly as PIL does: v = p1 + d * (p2 + d * (p3 + d * p4)) with p1 = v2,
    p2 = v3 - v1, p3 = 2 (v1 - v2) + v3 - v4, p4 = -v1 + v2 - v3 + v4. Separate in-place mul and
    add: addcmul fuses into an FMA on the CPU and rounds differently. `taps` (B, C, 4, HW) int16
    is overwritten. Converting the coefficients one at a time keeps every temporary under glibc's
    32 MiB mmap threshold at batch 512, which makes this three times faster on the CPU."""
    s0, s1, s2, s3 = taps.unbind(2)
    s3.sub_(s2)  # v4 - v3
    s2.sub_(s0)  # p2
    s0.sub_(s1)  # v1 - v2
    s3.sub_(s0)  # p4
    s0.sub_(s3)  # p3 = (v1 - v2) - p4
    v = s3.double().mul_(d)  # small integers: every conversion and p4 * d is exact
    v.add_(s0).mul_(d).add_(s2).mul_(d).add_(s1)
    return v.clamp_(0, 255).to(torch.int32).to(torch.uint8)


def source_index(col, row, H, W):
    """Flat source index, or H * W (the fill pixel) where the source lies outside the image."""
    inside = (col >= 0) & (col < W) & (row >= 0) & (row < H)
    return torch.where(inside, row * W + col, H * W)


def pil_geometry_tables(configs):
    """Per-configuration constants of PIL's transforms that do not depend on the image size, for
    configurations [(op, bin, sign, signed magnitude)] in pil_maps' order."""
    rot = [(o, m) for o, _, _, m in configs if o == "Rotate"]
    tra = [(o, m) for o, _, _, m in configs if o in ("TranslateX", "TranslateY")]
    she = [(o, m) for o, _, _, m in configs if o in ("ShearX", "ShearY")]
    tables = {}
    if rot:
        # Image.rotate's inverse matrix, rounded to 15 digits as PIL does, and its 16.16 fixed
        # point coefficients: a nearest rotation runs in PIL's fixed-point affine loop.
        mats = []
        for _, m in rot:
            angle = -math.radians(m % 360.0)
            mats.append([round(math.cos(angle), 15), round(math.sin(angle), 15),
                         round(-math.sin(angle), 15), round(math.cos(angle), 15)])
        tables["rot_m"] = torch.tensor(mats, dtype=torch.float64)
        tables["rot_fix"] = torch.tensor([[math.floor(v * 65536.0 + 0.5) for v in r] for r in mats],
                                         dtype=torch.long)
    if tra:
        tables["tra_m"] = torch.tensor([m for _, m in tra], dtype=torch.float64)
        tables["tra_x"] = torch.tensor([o == "TranslateX" for o, _ in tra])
    if she:
        tables["she_m"] = torch.tensor([m for _, m in she], dtype=torch.float64)
        tables["she_x"] = torch.tensor([o == "ShearX" for o, _ in she])
    return tables


def pil_maps(geo, H, W, dev):
    """(maps, fractions or None) for the tables of pil_geometry_tables: the identity, the nearest
    maps (rotate, translate), then the bicubic ones (shear)."""
    HW = H * W
    ys = torch.arange(H, device=dev).view(1, H, 1)
    xs = torch.arange(W, device=dev).view(1, 1, W)
    nearest = [torch.arange(HW, device=dev).view(1, HW)]
    if "rot_m" in geo:
        # Image.rotate: matrix[2] = a * -cx + b * -cy + 0 + cx (doubles), then 16.16 fixed point
        # xx = FIX(a2 + a0/2 + a1/2) + y * A1 + x * A0 and source column xx >> 16.
        m, fix = geo["rot_m"], geo["rot_fix"]
        cx, cy = W / 2, H / 2
        c = m[:, 0] * -cx + m[:, 1] * -cy + 0.0 + cx
        f = m[:, 2] * -cx + m[:, 3] * -cy + 0.0 + cy
        a2 = torch.floor((c + m[:, 0] * 0.5 + m[:, 1] * 0.5) * 65536.0 + 0.5).long()
        a5 = torch.floor((f + m[:, 2] * 0.5 + m[:, 3] * 0.5) * 65536.0 + 0.5).long()
        xx = a2.view(-1, 1, 1) + ys * fix[:, 1].view(-1, 1, 1) + xs * fix[:, 0].view(-1, 1, 1)
        yy = a5.view(-1, 1, 1) + ys * fix[:, 3].view(-1, 1, 1) + xs * fix[:, 2].view(-1, 1, 1)
        nearest.append(source_index(xx >> 16, yy >> 16, H, W))
    if "tra_m" in geo:
        # PIL's scale-affine loop: source column floor(c + 0.5 + x) with c = m * W * sign, where
        # the sign is already in m. PIL accumulates x by repeated += 1.0; the sums agree unless c
        # + 0.5 is within ~1e-13 of an integer, which none of the magnitudes come near.
        m, is_x = geo["tra_m"].view(-1, 1, 1), geo["tra_x"].view(-1, 1, 1)
        cx = torch.where(is_x, m * W, 0.0) + 0.5
        cy = torch.where(is_x, 0.0, m * H) + 0.5
        nearest.append(source_index(torch.floor(cx + xs).long(), torch.floor(cy + ys).long(), H, W))
    maps = torch.cat([n.view(-1, HW) for n in nearest])
    if "she_m" not in geo:
        return maps, None
    # PIL's bicubic transform: source point (x + .5 + a1 (y + .5), a3 (x + .5) + y + .5) in
    # doubles; outside [0, W) x [0, H) is fill, else taps at floor(p - .5) - 1 .. + 2 (clamped)
    # along the sheared axis with fraction d. Along the other axis the fraction is exactly 0.
    m, is_x = geo["she_m"].view(-1, 1, 1), geo["she_x"].view(-1, 1, 1)
    xc, yc = xs.double() + 0.5, ys.double() + 0.5
    px = xc + torch.where(is_x, m, 0.0) * yc + 0.0
    py = torch.where(is_x, 0.0, m) * xc + yc + 0.0
    inside = (px >= 0) & (px < W) & (py >= 0) & (py < H)
    px, py = px - 0.5, py - 0.5
    x0, y0 = torch.floor(px), torch.floor(py)
    frac = torch.where(inside, torch.where(is_x, px - x0, py - y0), 0.0)
    x0, y0 = x0.long(), y0.long()
    taps = []
    for t in (-1, 0, 1, 2):
        col = (x0 + torch.where(is_x, t, 0)).clamp(0, W - 1)
        row = (y0 + torch.where(is_x, 0, t)).clamp(0, H - 1)
        taps.append(torch.where(inside, row * W + col, HW))
    shear = torch.stack(taps, 1).view(-1, 4 * HW)
    n_near = maps.shape[0]
    maps = torch.cat([maps.repeat(1, 4), shear])  # a nearest map: four equal taps, fraction 0
    frac = torch.cat([torch.zeros(n_near, HW, dtype=torch.float64, device=dev), frac.view(-1, HW)])
    return maps, frac


_TV_GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")


def tv_geometry_tables(configs, signed, translate=None):
    """The size-independent 2x2 part of torchvision's inverse affine matrix per configuration
    [(op, bin, sign, signed magnitude)], with its op kind, bin and sign (ops in `signed` only), and
    `translate`, where given, the (2, n_bins) TranslateX / TranslateY magnitudes."""
    if not configs:
        return {}
    mats = []
    for op, _, _, m in configs:
        shear = math.degrees(math.atan(m)) if op in ("ShearX", "ShearY") else 0.0
        angle = -m if op == "Rotate" else 0.0  # F.rotate passes -angle
        mat = _get_inverse_affine_matrix([0.0, 0.0], angle, [0.0, 0.0], 1.0,
                                         [shear if op == "ShearX" else 0.0, shear if op == "ShearY" else 0.0])
        mats.append([mat[0], mat[1], mat[3], mat[4]])
    tables = {"tv_m": torch.tensor(mats, dtype=torch.float64),
              "tv_kind": torch.tensor([_TV_GEOMETRIC.index(op) for op, _, _, _ in configs]),
              "tv_bin": torch.tensor([b for _, b, _, _ in configs]),
              "tv_sign": torch.tensor([-1.0 if op in signed and s == 0 else 1.0 for op, _, s, _ in configs],
                                      dtype=torch.float64)}
    if translate is not None:
        tables["tv_translate"] = torch.tensor(translate, dtype=torch.float64)
    return tables


def tv_maps(geo, H, W, dev, translate_fraction, n_bins):
    """(maps, None): torchvision's grid for each configuration of tv_geometry_tables (its inverse
    matrix, _gen_affine_grid's float32 maths), sampled with grid_sample NEAREST from an image of
    source indices: the map that torchvision's own call would sample through, fill where
    grid_sample pads with zeros; the identity first. Translate magnitudes come from the table, or
    are linspace(0, translate_fraction * side, n_bins) for this image size."""
    m, kind, bins = geo["tv_m"], geo["tv_kind"], geo["tv_bin"]
    if translate_fraction is None:
        table = geo["tv_translate"]
        tmag = torch.where(kind == 2, table[0][bins], table[1][bins])
    else:
        lin_x = torch.linspace(0.0, translate_fraction * W, n_bins, device=dev)
        lin_y = torch.linspace(0.0, translate_fraction * H, n_bins, device=dev)
        tmag = torch.where(kind == 2, lin_x[bins], lin_y[bins]).double()
    HW = H * W
    n = m.shape[0]
    is_shear = kind < 2
    shift = (tmag * geo["tv_sign"]).trunc()  # int(magnitude)
    tx = torch.where(kind == 2, shift, 0.0)
    ty = torch.where(kind == 3, shift, 0.0)
    # center=[0, 0] for shears (pixel -size/2 from the centre), None (the centre) otherwise
    cx = torch.zeros_like(shift).masked_fill(is_shear, 0 - W * 0.5)
    cy = torch.zeros_like(shift).masked_fill(is_shear, 0 - H * 0.5)
    ncx, ncy = -cx - tx, -cy - ty
    c = 0.0 + (m[:, 0] * ncx + m[:, 1] * ncy) + cx
    f = 0.0 + (m[:, 2] * ncx + m[:, 3] * ncy) + cy
    theta = torch.stack([m[:, 0], m[:, 1], c, m[:, 2], m[:, 3], f], 1).float().view(n, 2, 3)
    # _gen_affine_grid, with one theta per configuration
    x_grid = torch.linspace(-W * 0.5 + 0.5, W * 0.5 + 0.5 - 1, steps=W, device=dev)
    y_grid = torch.linspace(-H * 0.5 + 0.5, H * 0.5 + 0.5 - 1, steps=H, device=dev)
    base = torch.stack([x_grid.expand(H, W), y_grid.view(H, 1).expand(H, W),
                        torch.ones(H, W, device=dev)], -1).view(1, HW, 3)
    half = torch.stack([torch.full((), 0.5 * W, device=dev), torch.full((), 0.5 * H, device=dev)])
    rescaled = theta.transpose(1, 2) / half
    grid = base.expand(n, HW, 3).bmm(rescaled).view(n, H, W, 2)
    index = torch.arange(1, HW + 1, device=dev, dtype=torch.float32).view(1, 1, H, W).expand(n, 1, H, W)
    sampled = F.grid_sample(index, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    sampled = sampled.round().long().view(n, HW) - 1
    maps = torch.where(sampled < 0, HW, sampled)
    return torch.cat([torch.arange(HW, device=dev).view(1, HW), maps]), None


# ---------------------------------------------------------------- colour

def posterize_lut(bits):
    """Keeps the top `bits` bits (PIL and torchvision alike)."""
    return (torch.arange(256) & ~(2 ** (8 - bits) - 1)).to(torch.uint8)


def solarize_lut(threshold):
    """Inverts the levels at or above `threshold` (PIL and torchvision alike)."""
    i = torch.arange(256)
    return torch.where(i < threshold, i, 255 - i).to(torch.uint8)


def invert_lut():
    return (255 - torch.arange(256)).to(torch.uint8)


def pil_brightness_lut(a):
    # blend(black, img, a): 0 + a * (i - 0) in C floats, truncated
    return u8((torch.arange(256).float() * torch.tensor(a, dtype=torch.float32) + 0.0).clamp(0, 255))


def tv_brightness_lut(r):
    # _blend with a black degenerate: r * i + (1 - r) * 0 in float32, clamped, truncated
    i = torch.arange(256, dtype=torch.uint8)
    return (r * i + (1.0 - r) * torch.zeros_like(i)).clamp(0, 255).to(torch.uint8)


def pil_grey(x):
    # PIL's RGB -> L: (19595 R + 38470 G + 7471 B + 32768) >> 16, here in float32, where every
    # partial sum is an integer below 2 ** 24 and so exact. An L image is its own grey.
    if x.shape[1] == 1:
        return x
    grey = x[:, 0:1] * 19595.0
    grey += x[:, 1:2] * 38470.0
    grey += x[:, 2:3] * 7471.0
    return grey.add_(32768.0).mul_(1 / 65536).floor_()


def tv_grey(x):
    # rgb_to_grayscale: (0.2989 r + 0.587 g + 0.114 b) in float32, truncated
    if x.shape[1] == 1:
        return x
    return (0.2989 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).to(torch.uint8)


def pil_contrast_lut(grey, a, levels, H, W):
    # ImageEnhance.Contrast: degenerate = int(mean(L) + 0.5), mean as ImageStat computes it
    mean = torch.floor(grey.sum(dim=2, keepdim=True, dtype=torch.float64) / (H * W) + 0.5)
    mean = mean.float()
    return u8((mean + a * (levels.float() - mean)).clamp_(0, 255))


def tv_contrast_lut(grey, r, q, levels, H, W):
    # adjust_contrast: _blend(img, mean of the grey image in float32, ratio)
    B = grey.shape[0]
    mean = torch.mean(grey.view(B, 1, H, W).float(), dim=(-3, -2, -1), keepdim=True).view(B, 1, 1)
    return (r * levels.float() + q * mean).clamp(0, 255).to(torch.uint8)


def bounds(xl, levels, histogram):
    """(histogram (B, C, 256) or None, lowest level, highest level) per (image, channel) of the
    int64 x (B, C, HW); the histogram too where `histogram` (Equalize needs it)."""
    B, C, HW = xl.shape
    if not histogram:
        # Not over the uint8 image: torch.compile's CPU code for uint8 amin/amax is wrong
        # (torch 2.14 gives a minimum of 0 for a row of 60..123).
        return None, xl.amin(dim=2, keepdim=True), xl.amax(dim=2, keepdim=True)
    hist = torch.zeros(B, C, 256, dtype=torch.int32, device=xl.device)
    hist.scatter_add_(2, xl, torch.ones(1, 1, 1, dtype=torch.int32, device=xl.device).expand(B, C, HW))
    present = hist > 0
    lo = torch.where(present, levels, 255).amin(dim=2, keepdim=True)
    hi = torch.where(present, levels, 0).amax(dim=2, keepdim=True)
    return hist, lo, hi


def lut_stage(x, lut, levels, contrast=None, autocontrast=None, equalize=None):
    """x (B, C, HW) uint8 through per-(image, channel) tables: `lut` (B, 1, 256), replaced where
    a per-image mask (B, 1, 1) says so by contrast = (mask, its table), autocontrast = (mask,
    pil_ or tv_autocontrast_lut) or equalize = mask. None: the slot cannot draw that op."""
    B, C, HW = x.shape
    if contrast is not None:
        lut = torch.where(contrast[0], contrast[1], lut)
    xl = x.long()
    if autocontrast is not None or equalize is not None:
        hist, lo, hi = bounds(xl, levels, equalize is not None)
        if autocontrast is not None:
            lut = torch.where(autocontrast[0], autocontrast[1](lo, hi, levels), lut)
        if equalize is not None:
            lut = torch.where(equalize, equalize_lut(hist, hi, levels, HW), lut)
    return lut.expand(B, C, 256).gather(2, xl)


def pil_autocontrast_lut(lo, hi, levels):
    # ImageOps.autocontrast: int(i * scale + offset) clamped, scale = 255 / (hi - lo), in doubles
    lo, hi = lo.double(), hi.double()
    scale = torch.full_like(lo, 255.0) / (hi - lo)
    offset = -lo * scale
    lut = (levels.double() * scale + offset).clamp_(0, 255)  # then truncated by the cast
    return torch.where(hi > lo, lut, levels.double()).to(torch.uint8)


def tv_autocontrast_lut(lo, hi, levels):
    # autocontrast: bound / (max - min) is Tensor.__rtruediv__, a reciprocal times 255.
    minimum, maximum = lo.float(), hi.float()
    scale = 255.0 / (maximum - minimum)
    flat = torch.isfinite(scale).logical_not()
    minimum = torch.where(flat, 0.0, minimum)
    scale = torch.where(flat, 1.0, scale)
    return ((levels.float() - minimum) * scale).clamp(0, 255).to(torch.uint8)


def equalize_lut(hist, hi, levels, n):
    """PIL's and torchvision's equalize, per (image, channel) from its histogram of n pixels:
    lut[i] = (step // 2 + #pixels below i) // step with step = (n - #pixels at the top level) // 255,
    clipped to 255, identity when step is 0. Integer quotients through float64 are exact here."""
    step = torch.div(n - hist.gather(2, hi), 255, rounding_mode="floor").double()
    below = (hist.cumsum(2, dtype=torch.int32) - hist).double()
    lut = torch.floor((torch.floor(step / 2) + below) / step.clamp(min=1)).clamp_(max=255)
    return torch.where(step > 0, lut, levels.double()).to(torch.uint8)


def smooth(x):
    """PIL's ImageFilter.SMOOTH (the degenerate of Sharpness, and torchvision's too) of an
    integer-valued float32 (B, C, H, W): the 3x3 kernel [1 1 1; 1 5 1; 1 1 1] / 13 rounded half up,
    border pixels kept. The exact S / 13 is never within 1/26 of a rounding boundary, so
    floor((S + 6.5) / 13) of the exact integer sum S reproduces both libraries' float convolutions."""
    rows = x[..., :-2] + x[..., 1:-1]
    rows += x[..., 2:]
    box = rows[..., :-2, :] + rows[..., 1:-1, :]
    box += rows[..., 2:, :]
    box += x[..., 1:-1, 1:-1] * 4
    out = x.clone()
    out[..., 1:-1, 1:-1] = box.add_(6.5).mul_(1 / 13).floor_()
    return out


def degenerate(xf, H, W, grey, color=None, sharpness=True):
    """What each image of the float32 xf (B, C, HW) blends with: its smooth (Sharpness), or where
    the mask `color` (B, 1, 1) says so, or everywhere if not `sharpness`, its grey (Color)."""
    if not sharpness:
        return grey.float()
    B, C, HW = xf.shape
    out = smooth(xf.view(B, C, H, W)).view(B, C, HW)
    return out if color is None else torch.where(color, grey, out)


def pil_blend(y, degenerate, a):
    # Image.blend(degenerate, image, a) = trunc(clip(deg + a * (img - deg))) in C floats
    return u8((y - degenerate).mul_(a).add_(degenerate).clamp_(0, 255))


def tv_blend(y, degenerate, r, q):
    # _blend: ratio * img + (1 - ratio) * degenerate in float32, clamped, truncated
    return u8((y * r).add_(degenerate * q).clamp_(0, 255))
