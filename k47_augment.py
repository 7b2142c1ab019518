"""The RandAugment of kentaroy47/vision-transformers-cifar10 (its randomaug.py, after
ildoonet/pytorch-randaugment), used by the k47_vit_patch4 recipe (N=2, M=14), on both input paths.

The source's semantics, per image: `num_ops` ops drawn uniformly with replacement from its 16-op
list (OPS, in its order) by Python's `random.choices`, before any op runs; each applied in turn,
always (no probability), at val = (m / 30) * (maxval - minval) + minval in Python floats, m on a
0-30 scale (RANGES). The geometric ops negate val when `random.random() > 0.5`, drawn inside each
op call; they use PIL's defaults: NEAREST, fill 0, Rotate about the centre without expanding, and
the translations are absolute (val pixels: at m=14, 46.7 px, so a 32-pixel image becomes all
fill, which is faithful). Posterize keeps max(1, int(val)) bits (1 at m=14); Solarize inverts the
levels i with not i < val; SolarizeAdd adds val to every level in numpy floats, clips, truncates to
uint8, then solarizes at 128; the enhance ops are ImageEnhance's at factor val. CutoutAbs draws
x0 = np.random.uniform(w), then y0 = np.random.uniform(h), from numpy's global RNG: uniform(low)
means low=w, high=1.0, so the draw is w + (1 - w) u, in (1, w], a quirk kept here; the corner is
int(max(0, x0 - val / 2)), the far corner min(w, x0 + val), and ImageDraw fills the box
(125, 123, 114) (CIFAR-10's mean colour) with both ends included, truncating the float corners.
In the source this policy runs FIRST, before RandomCrop(32, padding=4) and the flip (it is
inserted at index 0 of the train transform): `before_crop = True` on both classes says so.

`K47RandAugment` (the DataLoader-workers path) is that policy on PIL images, RGB or L, written from
those semantics with PIL's own ops (`pil_op`). It draws as the source does (`draw`: the op
choice, then each op's sign from Python's `random`, the cutout centres from numpy's), each call
seeded from torch's global RNG, which the loader seeds per image, with both states restored
afterwards (as timm_augment.TimmRandAugment does). For an L image the cutout fill is
(125, 123, 114) as PIL gives that colour to an L image (ImageColor.getcolor: its luma, 123); the
source's tuple would make ImageDraw raise on an L image.

`BatchK47RandAugment` (the device path) draws the same parameters per image on the device and
applies them to (B, C, H, W) uint8 batches: one stage each for geometry (`pil_nearest_maps`,
PIL's nearest affine transform exactly, its scale loop for translations and its 16.16 fixed-point
loop for rotations and shears), lookup tables (batch_ops.lut_stage), blends (batch_ops) and the
cutout box, a fixed sequence of tensor ops whatever the batch and the draw, nothing read back to
the host. Every op equals `pil_op` bit for bit (tests/test_k47_augment.py, every magnitude 0..30
for the geometric ops). It needs float64 on the device (CUDA, CPU).
"""
import math
import numbers
import random

import numpy as np
import torch
import torch.nn.functional as F

import batch_ops
from autoaugment import _BatchPolicy
from utils import UserError

OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color", "Contrast",
       "Brightness", "Sharpness", "ShearX", "ShearY", "CutoutAbs", "TranslateXabs", "TranslateYabs")
OP_INDEX = {name: i for i, name in enumerate(OPS)}
RANGES = {"AutoContrast": (0, 1), "Equalize": (0, 1), "Invert": (0, 1), "Rotate": (0, 30), "Posterize": (0, 4),
          "Solarize": (0, 256), "SolarizeAdd": (0, 110), "Color": (0.1, 1.9), "Contrast": (0.1, 1.9),
          "Brightness": (0.1, 1.9), "Sharpness": (0.1, 1.9), "ShearX": (0.0, 0.3), "ShearY": (0.0, 0.3),
          "CutoutAbs": (0, 40), "TranslateXabs": (0.0, 100), "TranslateYabs": (0.0, 100)}
SIGNED = ("Rotate", "ShearX", "ShearY", "TranslateXabs", "TranslateYabs")  # the geometric ops, in OPS order
MAX_MAGNITUDE = 30
CUTOUT_FILL = (125, 123, 114)
# The same colour in an L image, as PIL converts an RGB colour for one (ImageColor.getcolor).
CUTOUT_FILL_L = (CUTOUT_FILL[0] * 19595 + CUTOUT_FILL[1] * 38470 + CUTOUT_FILL[2] * 7471 + 0x8000) >> 16


def _check_settings(num_ops, magnitude):
    """(num_ops, magnitude) as ints, or a UserError. The magnitude is an integer: the source's M is
    one, and the device's translations are exact for every integer (see pil_nearest_maps)."""
    if isinstance(num_ops, bool) or not isinstance(num_ops, numbers.Integral) or num_ops < 0:
        raise UserError(f"k47 RandAugment: num_ops (N) must be an integer >= 0, got {num_ops!r}")
    if isinstance(magnitude, bool) or not isinstance(magnitude, numbers.Real) or not float(magnitude).is_integer() \
            or not 0 <= magnitude <= MAX_MAGNITUDE:
        raise UserError(f"k47 RandAugment: magnitude (M) must be an integer in 0..{MAX_MAGNITUDE} (the source's "
                        f"0-30 scale), got {magnitude!r}")
    return int(num_ops), int(magnitude)


def op_values(magnitude):
    """{op: val}: the source's (m / 30) * (maxval - minval) + minval, in Python floats."""
    return {name: (magnitude / MAX_MAGNITUDE) * (hi - lo) + lo for name, (lo, hi) in RANGES.items()}


def numpy_uniform(low, u):
    """numpy's legacy uniform(low) (high = 1.0) for its unit draw u: low + (high - low) * u, in
    doubles (mtrand's random_uniform); tests check it against np.random.uniform bit for bit."""
    return low + (1.0 - low) * u


def cutout_box(w, h, value, ux, uy):
    """(x0, y0, x1, y1), the source's CutoutAbs corners for the unit draws (ux, uy) of its
    x0 = np.random.uniform(w), y0 = np.random.uniform(h)."""
    x0, y0 = numpy_uniform(w, ux), numpy_uniform(h, uy)
    x0 = int(max(0, x0 - value / 2.))
    y0 = int(max(0, y0 - value / 2.))
    return x0, y0, min(w, x0 + value), min(h, y0 + value)


def pil_rotate_matrix(degrees, w, h):
    """Image.rotate(degrees)'s inverse affine matrix for a w x h image (centre (w / 2, h / 2), no
    translation or expansion), or None where rotate takes a shortcut instead (a copy at 0 degrees,
    a transpose at 180, and at 90 and 270 for a square image)."""
    angle = degrees % 360.0
    if angle in (0, 180) or (angle in (90, 270) and w == h):
        return None
    angle = -math.radians(angle)
    a, b, d, e = (round(math.cos(angle), 15), round(math.sin(angle), 15), round(-math.sin(angle), 15),
                  round(math.cos(angle), 15))
    cx, cy = w / 2, h / 2
    return [a, b, a * -cx + b * -cy + 0.0 + cx, d, e, d * -cx + e * -cy + 0.0 + cy]


# ---------------------------------------------------------------- workers path: the PIL ops

def pil_op(img, name, value, sign=1, centre=(0.0, 0.0)):
    """The source's op `name` on a PIL image ("RGB" or "L") at its val `value`; `sign` (+1 or -1:
    the outcome of the op's random.random() > 0.5) negates the geometric ops' val, `centre` is
    CutoutAbs's pair of unit draws (see cutout_box)."""
    from PIL import Image, ImageDraw, ImageEnhance, ImageOps

    if name in SIGNED:
        v = value * sign
        if name == "Rotate":
            return img.rotate(v)
        data = {"ShearX": (1, v, 0, 0, 1, 0), "ShearY": (1, 0, 0, v, 1, 0), "TranslateXabs": (1, 0, v, 0, 1, 0),
                "TranslateYabs": (1, 0, 0, 0, 1, v)}[name]
        return img.transform(img.size, Image.Transform.AFFINE, data)
    if name == "AutoContrast":
        return ImageOps.autocontrast(img)
    if name == "Equalize":
        return ImageOps.equalize(img)
    if name == "Invert":
        return ImageOps.invert(img)
    if name == "Posterize":
        return ImageOps.posterize(img, max(1, int(value)))
    if name == "Solarize":
        return ImageOps.solarize(img, value)
    if name == "SolarizeAdd":
        arr = np.clip(np.array(img).astype(int) + value, 0, 255).astype(np.uint8)
        return ImageOps.solarize(Image.fromarray(arr), 128)
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return getattr(ImageEnhance, name)(img).enhance(value)
    if name == "CutoutAbs":
        img = img.copy()
        fill = CUTOUT_FILL_L if img.mode == "L" else CUTOUT_FILL
        ImageDraw.Draw(img).rectangle(cutout_box(*img.size, value, *centre), fill)
        return img
    raise ValueError(f"unknown op {name!r}; choose from: {', '.join(OPS)}")


class K47RandAugment:
    """The source's RandAugment(n, m) on PIL images, reproducible from torch's global RNG."""

    before_crop = True  # the source runs it before RandomCrop(32, padding=4) and the flip

    def __init__(self, num_ops=2, magnitude=14):
        self.num_ops, self.magnitude = _check_settings(num_ops, magnitude)
        self.values = op_values(self.magnitude)

    def draw(self):
        """The source's draws for one image, from Python's `random` and numpy's global RNG, in its
        order: {"op": [OPS index] * n, "sign": [+-1] * n, "centre": [(ux, uy)] * n}.
        random.choices(range(16)) draws as random.choices(OP_LIST) does (it depends on the
        length only); the cutout's unit draws are what its two np.random.uniform calls draw (one
        double each), so the centres are numpy_uniform(w, ux), numpy_uniform(h, uy)."""
        ops = random.choices(range(len(OPS)), k=self.num_ops)
        signs, centres = [], []
        for op in ops:
            name = OPS[op]
            signs.append(-1 if name in SIGNED and random.random() > 0.5 else 1)
            centres.append((np.random.random_sample(), np.random.random_sample()) if name == "CutoutAbs"
                           else (0.0, 0.0))
        return {"op": ops, "sign": signs, "centre": centres}

    def apply(self, img, params):
        for op, sign, centre in zip(params["op"], params["sign"], params["centre"]):
            img = pil_op(img, OPS[op], self.values[OPS[op]], sign, centre)
        return img

    def __call__(self, img):
        if img.mode not in ("RGB", "L"):
            raise ValueError(f"expected an RGB or L image, got mode {img.mode!r}")
        seed = int(torch.randint(0, 2**63 - 1, ()))
        states = random.getstate(), np.random.get_state()
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            return self.apply(img, self.draw())
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])

    def __repr__(self):
        return f"{type(self).__name__}(num_ops={self.num_ops}, magnitude={self.magnitude})"


# ---------------------------------------------------------------- device path

def pil_nearest_maps(matrix, H, W):
    """(n, H * W) long: for each float64 matrix (n, 6), the source pixel of every output pixel of
    Image.transform((W, H), AFFINE, matrix) with NEAREST, H * W where PIL fills (with 0).

    As ImagingTransformAffine picks its loop: where a1 = a3 = 0 (translations, the identity) the
    scale loop, source column COORD(a2 + a0 / 2 + x a0) (COORD: -1 below 0, else truncation) and
    row COORD(a5 + a4 / 2 + y a4); PIL accumulates x a0 by repeated addition, which gives the same
    coordinate unless a2 + 1/2 lies within ~1e-12 of an integer (for this policy's translations,
    10 m / 3 px, its fraction is 1/2, 1/6 or 5/6). Elsewhere the 16.16 fixed-point loop: FIX(v) =
    floor(v * 65536 + 0.5) of a0, a1, a3, a4 and of a2 + a0 / 2 + a1 / 2, a5 + a3 / 2 + a4 / 2,
    source (xx >> 16, yy >> 16) with xx = A2 + y A1 + x A0, yy = A5 + y A4 + x A3, exact in int64.
    (PIL uses that loop while the corners map within +-32768 px: any image under ~20000 px.)"""
    n = matrix.shape[0]
    dev = matrix.device
    a = matrix.view(n, 6, 1, 1).unbind(1)
    xs = torch.arange(W, device=dev).view(1, 1, W)
    ys = torch.arange(H, device=dev).view(1, H, 1)
    # scale loop
    xo = a[2] + a[0] * 0.5 + xs * a[0]
    yo = a[5] + a[4] * 0.5 + ys * a[4]
    col_s = torch.where(xo < 0, -1, xo.trunc()).long()
    row_s = torch.where(yo < 0, -1, yo.trunc()).long()
    # fixed-point loop
    fix = lambda v: torch.floor(v * 65536.0 + 0.5).long()  # noqa: E731
    xx = fix(a[2] + a[0] * 0.5 + a[1] * 0.5) + ys * fix(a[1]) + xs * fix(a[0])
    yy = fix(a[5] + a[3] * 0.5 + a[4] * 0.5) + ys * fix(a[4]) + xs * fix(a[3])
    scale = (a[1] == 0) & (a[3] == 0)
    col = torch.where(scale, col_s, xx >> 16)
    row = torch.where(scale, row_s, yy >> 16)
    inside = (col >= 0) & (col < W) & (row >= 0) & (row < H)
    return torch.where(inside, row * W + col, H * W).view(n, H * W)


def nearest_gather(x, maps):
    """x (B, C, HW) uint8 resampled through one map (B, HW) per image (pil_nearest_maps), 0 where
    the map says fill."""
    B, C, HW = x.shape
    return F.pad(x, (0, 1), value=0).gather(2, maps.unsqueeze(1).expand(B, C, HW))


def pil_nearest_affine(x, matrix, H, W):
    """Image.transform((W, H), AFFINE, matrix[i]) (NEAREST, fill 0) of every image of x (B, C, HW)
    uint8, a float64 matrix (B, 6) per image."""
    return nearest_gather(x, pil_nearest_maps(matrix, H, W))


class BatchK47RandAugment(_BatchPolicy):
    """The source's RandAugment on (B, C, H, W) uint8 batches, per-image parameters drawn on the
    device.

    `draw` gives op (B, num_ops) OPS indices, sign (B, num_ops) float64 +-1 (+1 for unsigned ops)
    and centre (B, num_ops, 2) float64, CutoutAbs's unit draws (ux, uy) in [0, 1) (cutout_box)."""

    before_crop = True  # the source runs it before RandomCrop(32, padding=4) and the flip

    def __init__(self, num_ops=2, magnitude=14):
        self.num_ops, self.magnitude = _check_settings(num_ops, magnitude)
        self.num_slots = self.num_ops
        self._args = f"num_ops={self.num_ops}, magnitude={self.magnitude}"
        values = self.values = op_values(self.magnitude)
        self.cutout_value = values["CutoutAbs"]
        self._signed = torch.tensor([n in SIGNED for n in OPS])
        # Geometry: every (op, sign) a slot can draw is one of 11 matrices, the identity first.
        # Rotation rows hold cos, sin, -sin, cos as Image.rotate rounds them; their translation
        # part depends on the image size, so apply computes it, in rotate's order.
        mats, rot, cfg = [[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]], [False], [[0, 0] for _ in OPS]
        for name in SIGNED:
            for s, sign in enumerate((-1, 1)):
                v = values[name] * sign
                if name == "Rotate":
                    m = pil_rotate_matrix(v, 2, 2)  # only its size-free part is kept
                    if v % 360.0 != 0 and m is None:  # 90, 180, 270: beyond the policy's 30 degrees
                        raise ValueError(f"rotation by {v} degrees is a transpose in PIL")
                    m = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0] if m is None else m[:2] + [0.0] + m[3:5] + [0.0]
                else:
                    m = {"ShearX": [1.0, v, 0.0, 0.0, 1.0, 0.0], "ShearY": [1.0, 0.0, 0.0, v, 1.0, 0.0],
                         "TranslateXabs": [1.0, 0.0, v, 0.0, 1.0, 0.0],
                         "TranslateYabs": [1.0, 0.0, 0.0, 0.0, 1.0, v]}[name]
                cfg[OP_INDEX[name]][s] = len(mats)
                mats.append(m)
                rot.append(name == "Rotate" and m[1] != 0)
        self._geo_matrix = torch.tensor(mats, dtype=torch.float64)
        self._geo_rot = torch.tensor(rot)
        self._geo_cfg = torch.tensor(cfg)  # (op, sign > 0) -> matrix
        # Lookup tables of the ops whose table does not depend on the image, identity elsewhere.
        levels = np.arange(256)
        luts = {"Invert": 255 - levels,
                "Posterize": levels & ~(2 ** (8 - max(1, int(values["Posterize"]))) - 1),
                "Solarize": np.where(levels < values["Solarize"], levels, 255 - levels)}
        added = np.clip(levels + values["SolarizeAdd"], 0, 255).astype(np.uint8).astype(int)
        luts["SolarizeAdd"] = np.where(added < 128, added, 255 - added)
        luts["Brightness"] = batch_ops.pil_brightness_lut(values["Brightness"]).numpy()
        self._lut = torch.tensor(np.stack([luts.get(n, levels) for n in OPS]).astype(np.uint8))
        # Enhance factors as the C floats Image.blend takes; 1 (which blends to the image itself)
        # for every op but Color and Sharpness in the blend stage.
        factor = torch.tensor([values[n] if n in ("Color", "Contrast", "Sharpness") else 1.0 for n in OPS],
                              dtype=torch.float32)
        self._contrast_factor = factor
        self._blend_factor = torch.where(torch.tensor([n in ("Color", "Sharpness") for n in OPS]), factor, 1.0)
        self._fill = {3: torch.tensor(CUTOUT_FILL, dtype=torch.uint8),
                      1: torch.tensor([CUTOUT_FILL_L], dtype=torch.uint8)}

    def _draw(self, batch_size, device, generator):
        shape = (batch_size, self.num_ops)
        op = torch.randint(len(OPS), shape, device=device, generator=generator)
        u = torch.rand((3, *shape), dtype=torch.float64, device=device, generator=generator)
        sign = torch.where(self._signed[op] & (u[0] > 0.5), -1.0, 1.0).double()  # random() > 0.5: negate
        return {"op": op, "sign": sign, "centre": u[1:].permute(1, 2, 0)}

    @torch.no_grad()
    def apply(self, images, params):
        """`images` augmented with the drawn `params` (a new tensor; the input is not modified)."""
        self._check(images)
        B, C, H, W = images.shape
        if not self.num_slots:
            return images.clone()
        m = self._geo_matrix
        cx, cy = W / 2, H / 2
        # Image.rotate: matrix[2] = a * -cx + b * -cy + 0.0, then += cx (and so for matrix[5])
        a2 = torch.where(self._geo_rot, m[:, 0] * -cx + m[:, 1] * -cy + 0.0 + cx, m[:, 2])
        a5 = torch.where(self._geo_rot, m[:, 3] * -cx + m[:, 4] * -cy + 0.0 + cy, m[:, 5])
        maps = pil_nearest_maps(torch.stack([m[:, 0], m[:, 1], a2, m[:, 3], m[:, 4], a5], 1), H, W)
        x = images.reshape(B, C, H * W)
        for k in range(self.num_slots):
            x = self._slot(x, params["op"][:, k], params["sign"][:, k], params["centre"][:, k], maps, H, W)
        return x.view(B, C, H, W)

    def _slot(self, x, op, sign, centre, maps, H, W):
        """One op per image: geometry, lookup tables, blends, then the cutout box; each image goes
        through its op's stage and the others leave it exactly as it is."""
        B, C, HW = x.shape
        is_op = lambda name: (op == OP_INDEX[name]).view(B, 1, 1)  # noqa: E731
        cfg = self._geo_cfg[op, (sign > 0).long()]
        out = nearest_gather(x, maps.index_select(0, cfg))  # the identity map for non-geometric ops

        levels = torch.arange(256, device=x.device)
        grey = batch_ops.pil_grey(out)  # Contrast's mean and Color's degenerate
        factor = self._contrast_factor[op].view(B, 1, 1)
        out = batch_ops.lut_stage(out, self._lut[op].view(B, 1, 256), levels,
                                  (is_op("Contrast"), batch_ops.pil_contrast_lut(grey, factor, levels, H, W)),
                                  (is_op("AutoContrast"), batch_ops.pil_autocontrast_lut), is_op("Equalize"))

        xf = out.float()
        degenerate = batch_ops.degenerate(xf, H, W, grey, is_op("Color"), True)
        out = batch_ops.pil_blend(xf, degenerate, self._blend_factor[op].view(B, 1, 1))

        # CutoutAbs: the box of cutout_box in doubles, both ends included, the far ends truncated.
        v = self.cutout_value
        x0 = torch.floor((numpy_uniform(W, centre[:, 0]) - v / 2.).clamp(min=0)).view(B, 1, 1)
        y0 = torch.floor((numpy_uniform(H, centre[:, 1]) - v / 2.).clamp(min=0)).view(B, 1, 1)
        x1 = torch.floor((x0 + v).clamp(max=W))
        y1 = torch.floor((y0 + v).clamp(max=H))
        cols = torch.arange(W, device=x.device, dtype=torch.float64).view(1, 1, W)
        rows = torch.arange(H, device=x.device, dtype=torch.float64).view(1, H, 1)
        box = (cols >= x0) & (cols <= x1) & (rows >= y0) & (rows <= y1)
        box = box.view(B, 1, HW) & is_op("CutoutAbs")
        return torch.where(box, self._fill[C].view(1, C, 1), out)
