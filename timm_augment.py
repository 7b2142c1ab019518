"""timm's RandAugment (timm.data.auto_augment.rand_augment_transform, e.g. "rand-m9-mstd0.5-inc1")
on both input paths.

timm's semantics, per image: `num_ops` ops drawn uniformly with replacement from its op list
(_RAND_INCREASING_TRANSFORMS with inc1, else _RAND_TRANSFORMS); each applied with probability
`prob` (AugmentOp: skipped when random() > prob); each application draws its magnitude from
N(magnitude, magnitude_std) (uniform on [0, magnitude] when the std is infinite, fixed when it
is 0), clipped to [0, 10]; signed ops negate their argument with probability 1/2; the geometric
ops resample with bilinear or bicubic, drawn per application (timm's random interpolation,
which timm's create_transform leaves in place for train_interpolation "random"), and fill with
img_mean = round(255 * dataset mean) (create_transform's aa_params).

`TimmRandAugment` (the DataLoader-workers path) is timm's own transform. timm draws from
Python's `random` and numpy's global RNG; each call seeds both from torch's global RNG, which
the loader seeds per image (loaders._UInt8Dataset), and restores their states afterwards, so what
an image gets depends only on (run seed, epoch, position), as on the other policies.

`BatchTimmRandAugment` (the device path) draws the same parameters per image on the device and
applies them with timm_kernels.py: PIL's bilinear and bicubic affine transforms through a matrix
per image, per-image lookup tables and blend factors; every op is computed as Pillow computes it
(tests/test_timm_randaugment.py checks each against timm's op). It needs float64 (CUDA, CPU).
"""
import math
import random

import numpy as np
import torch

import batch_ops
import timm_kernels
from autoaugment import _BatchPolicy

# timm/data/auto_augment.py's lists, in its order and spelling (checked against timm by the tests).
RAND_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
            "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
RAND_INCREASING_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
                       "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
                       "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
OPS = ("Identity",) + RAND_OPS + tuple(n for n in RAND_INCREASING_OPS if n not in RAND_OPS)
OP_INDEX = {name: i for i, name in enumerate(OPS)}

LEVEL_DENOM = 10.0  # timm's _LEVEL_DENOM: magnitudes are on a 0-10 scale, and clipped to it
TRANSLATE_PCT = 0.45  # _translate_rel_level_to_arg's default (create_transform sets no translate_pct)
FILL = (128, 128, 128)  # timm's _FILL, its img_mean when none is given

# The ops whose level function calls _randomly_negate.
SIGNED = frozenset({"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel", "ColorIncreasing",
                    "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing"})
# Geometric kinds (timm_kernels.timm_matrices) and the level scale of each: degrees, shear, fraction.
GEOMETRY = {"Rotate": (1, 30.0), "ShearX": (2, 0.3), "ShearY": (3, 0.3), "TranslateXRel": (4, TRANSLATE_PCT),
            "TranslateYRel": (5, TRANSLATE_PCT)}
LUT_KIND = {"Posterize": 1, "PosterizeIncreasing": 1, "Solarize": 2, "SolarizeIncreasing": 2, "SolarizeAdd": 3,
            "Invert": 4, "Brightness": 5, "BrightnessIncreasing": 5}
BLEND_KIND = {"Color": 1, "ColorIncreasing": 1, "Sharpness": 2, "SharpnessIncreasing": 2}
INCREASING = frozenset(n for n in OPS if n.endswith("Increasing"))
INTERPOLATIONS = ("random", "bilinear", "bicubic")


def fill_color(mean=None):
    """timm's create_transform img_mean: tuple(min(255, round(255 * m)) for m in mean); None:
    timm's default (128, 128, 128)."""
    return FILL if mean is None else tuple(min(255, round(255 * float(m))) for m in mean)


def config_string(num_ops=2, magnitude=9, magnitude_std=0.5, prob=0.5, increasing=True):
    """timm's config string for these settings, e.g. "rand-m9-n2-mstd0.5-p0.5-inc1". An infinite
    std is written 101: timm reads any mstd above 100 as uniform sampling."""
    mstd = "101" if math.isinf(_std(magnitude_std)) else repr(float(magnitude_std))
    return f"rand-m{int(magnitude)}-n{int(num_ops)}-mstd{mstd}-p{float(prob)!r}-inc{int(bool(increasing))}"


def parse_config(config):
    """The keyword arguments of a timm RandAugment config string ("rand-m9-mstd0.5-inc1"), read as
    rand_augment_transform reads it (defaults m10, n2, mstd 0, p0.5, inc0). Transform sets (t...)
    and mmax are not supported here."""
    import re
    parts = config.split("-")
    if parts[0] != "rand":
        raise ValueError(f"not a RandAugment config: {config!r}")
    kw = dict(num_ops=2, magnitude=10, magnitude_std=0.0, prob=0.5, increasing=False)
    for part in parts[1:]:
        if part.startswith("t"):
            raise ValueError(f"timm transform sets ({part!r}) are not supported")
        cs = re.split(r"(\d.*)", part)
        if len(cs) < 2:
            continue
        key, val = cs[:2]
        if key == "mstd":
            kw["magnitude_std"] = _std(float(val))
        elif key in ("m", "n"):
            kw["magnitude" if key == "m" else "num_ops"] = int(val)
        elif key == "p":
            kw["prob"] = float(val)
        elif key == "inc":
            kw["increasing"] = bool(int(val))
        else:
            raise ValueError(f"unsupported RandAugment config section {part!r}")
    return kw


def _std(magnitude_std):
    """timm's reading of mstd: above 100 means uniform sampling (infinity)."""
    return math.inf if magnitude_std > 100 else float(magnitude_std)


def _check_settings(num_ops, magnitude, magnitude_std, prob, interpolation):
    if num_ops < 0 or not 0 <= magnitude <= LEVEL_DENOM:
        raise ValueError(f"num_ops must be >= 0 and magnitude in [0, 10] (timm's scale), got {num_ops}, {magnitude}")
    if not magnitude_std >= 0 or not 0 <= prob <= 1:
        raise ValueError(f"magnitude_std must be >= 0 and prob in [0, 1], got {magnitude_std}, {prob}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")


# ---------------------------------------------------------------- workers path: timm itself

def posterize(img, bits_to_keep, **_):
    """timm's posterize op, except that keeping 0 bits gives a black image, as ImageOps.posterize
    did when timm's increasing posterize was written (mask ~255). Pillow 13 refuses 0 bits with a
    ValueError, which timm's PosterizeIncreasing asks for at magnitude 10 (every clipped draw:
    ~2% of draws at m9 mstd0.5) and its Posterize below magnitude 2.5: unpatched, a run stops."""
    from timm.data.auto_augment import posterize as timm_posterize
    if bits_to_keep <= 0:
        return img.point([0] * 256 * len(img.getbands()))
    return timm_posterize(img, bits_to_keep)


class TimmRandAugment:
    """timm's rand_augment_transform on PIL images, reproducible from torch's global RNG."""

    def __init__(self, num_ops=2, magnitude=9, magnitude_std=0.5, prob=0.5, increasing=True, fill=FILL,
                 interpolation="random"):
        from PIL import Image
        from timm.data.auto_augment import rand_augment_transform

        _check_settings(num_ops, magnitude, magnitude_std, prob, interpolation)
        self.config, self.fill = config_string(num_ops, magnitude, magnitude_std, prob, increasing), tuple(fill)
        hparams = {}
        if interpolation != "random":  # create_transform passes a fixed interpolation only
            hparams["interpolation"] = {"bilinear": Image.Resampling.BILINEAR,
                                        "bicubic": Image.Resampling.BICUBIC}[interpolation]
        self.interpolation = interpolation
        # PIL wants one fill value for an L image: the first channel's (a 1-channel set has one).
        self.transforms = {mode: rand_augment_transform(self.config, {**hparams, "img_mean": fill})
                           for mode, fill in (("RGB", self.fill), ("L", self.fill[:1]))}
        for op in (op for t in self.transforms.values() for op in t.ops):
            if op.name in ("Posterize", "PosterizeIncreasing"):
                op.aug_fn = posterize

    def __call__(self, img):
        seed = int(torch.randint(0, 2**63 - 1, ()))
        states = random.getstate(), np.random.get_state()
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            return self.transforms["L" if img.mode == "L" else "RGB"](img)
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])

    def __repr__(self):
        return f"{type(self).__name__}({self.config!r}, fill={self.fill}, interpolation={self.interpolation!r})"


# ---------------------------------------------------------------- device path

class BatchTimmRandAugment(_BatchPolicy):
    """timm's RandAugment on (B, C, H, W) uint8 batches, per-image parameters drawn on the device.

    `draw` gives, each (B, num_ops): op (an OPS index), applied, magnitude (float64, clipped),
    sign (+-1.0; +1 for unsigned ops) and bicubic (else bilinear)."""

    def __init__(self, num_ops=2, magnitude=9, magnitude_std=0.5, prob=0.5, increasing=True, fill=FILL,
                 interpolation="random"):
        _check_settings(num_ops, magnitude, magnitude_std, prob, interpolation)
        self.num_ops, self.magnitude, self.magnitude_std, self.prob = num_ops, magnitude, _std(magnitude_std), prob
        self.increasing, self.interpolation, self.num_slots = bool(increasing), interpolation, num_ops
        self.config = config_string(num_ops, magnitude, magnitude_std, prob, increasing)
        self._args = f"{self.config!r}, fill={tuple(fill)}, interpolation={interpolation!r}"
        self.op_names = RAND_INCREASING_OPS if increasing else RAND_OPS
        self._choices = torch.tensor([OP_INDEX[n] for n in self.op_names])
        self.fill = torch.tensor(tuple(fill), dtype=torch.uint8)
        self._signed = torch.tensor([n in SIGNED for n in OPS])
        self._increasing = torch.tensor([n in INCREASING for n in OPS])
        self._geo_kind = torch.tensor([GEOMETRY.get(n, (0, 0.0))[0] for n in OPS])
        self._geo_scale = torch.tensor([GEOMETRY.get(n, (0, 0.0))[1] for n in OPS], dtype=torch.float64)
        self._lut_kind = torch.tensor([LUT_KIND.get(n, 0) for n in OPS])
        self._blend_kind = torch.tensor([BLEND_KIND.get(n, 0) for n in OPS])

    def _draw(self, batch_size, device, generator):
        shape = (batch_size, self.num_ops)
        pick = torch.randint(len(self._choices), shape, device=device, generator=generator)
        u = torch.rand((4, *shape), dtype=torch.float64, device=device, generator=generator)
        if math.isinf(self.magnitude_std):  # random.uniform(0, m)
            magnitude = u[3] * self.magnitude
        elif self.magnitude_std > 0:  # random.gauss(m, std)
            z = torch.randn(shape, dtype=torch.float64, device=device, generator=generator)
            magnitude = z * self.magnitude_std + self.magnitude
        else:
            magnitude = torch.full(shape, float(self.magnitude), dtype=torch.float64, device=device)
        op = self._choices[pick]
        bicubic = {"random": u[2] < 0.5, "bicubic": u[2] < 2, "bilinear": u[2] > 2}[self.interpolation]
        return {"op": op, "applied": u[0] <= self.prob, "magnitude": magnitude.clamp(0.0, LEVEL_DENOM),
                "sign": torch.where(self._signed[op] & (u[1] > 0.5), -1.0, 1.0).double(), "bicubic": bicubic}

    @torch.no_grad()
    def apply(self, images, params):
        """`images` augmented with the drawn `params` (a new tensor; the input is not modified)."""
        self._check(images)
        B, C, H, W = images.shape
        x = images.reshape(B, C, H * W)
        fill = self.fill[:C] if C < len(self.fill) else self.fill.expand(C)
        for k in range(self.num_slots):
            op = torch.where(params["applied"][:, k], params["op"][:, k], 0)
            x = self._slot(x, op, params["magnitude"][:, k], params["sign"][:, k], params["bicubic"][:, k],
                           fill, H, W)
        return x.view(B, C, H, W) if self.num_slots else images.clone()

    def _slot(self, x, op, magnitude, sign, bicubic, fill, H, W):
        """One op per image: geometry, then lookup tables, then blends; each image goes through its
        op's stage and the other two leave it exactly as it is. The arguments are timm's level
        functions, in its order of operations (level / 10 * scale, then the sign)."""
        B, C, HW = x.shape
        level = magnitude / LEVEL_DENOM
        sign = torch.where(self._signed[op], sign, 1.0)
        increasing = self._increasing[op]

        kind = self._geo_kind[op]
        value = level * self._geo_scale[op] * sign  # degrees, shear factor, translate fraction
        value = torch.where(kind == 4, value * W, torch.where(kind == 5, value * H, value))  # pct * size
        moved = timm_kernels.pil_affine(x, timm_kernels.timm_matrices(kind, value, H, W), bicubic, fill, H, W)
        out = torch.where((kind > 0).view(B, 1, 1), moved, x)

        levels = torch.arange(256, device=x.device)
        quarter = torch.trunc(level * 4.0).long()  # int(level / 10 * 4)
        bits = torch.where(increasing, 4 - quarter, quarter)
        threshold = torch.trunc(level * 256.0).long().clamp(max=256)  # min(256, int(level / 10 * 256))
        threshold = torch.where(increasing, 256 - threshold, threshold)
        add = torch.trunc(level * 110.0).long().clamp(max=128)  # min(128, int(level / 10 * 110))
        factor = torch.where(increasing, (1.0 + level * 0.9 * sign).clamp(min=0.1), level * 1.8 + 0.1).float()
        lut_kind = self._lut_kind[op].view(B, 1, 1)
        lut = levels.expand(B, 1, 256)
        for k, table in ((1, timm_kernels.posterize_lut(levels, bits)),
                         (2, timm_kernels.solarize_lut(levels, threshold)),
                         (3, timm_kernels.solarize_add_lut(levels, add)),
                         (4, 255 - levels),
                         (5, timm_kernels.brightness_lut(levels, factor))):
            lut = torch.where(lut_kind == k, table, lut)
        grey = batch_ops.pil_grey(out)  # Contrast's mean and Color's degenerate
        is_op = lambda name: (op == OP_INDEX[name]).view(B, 1, 1)  # noqa: E731
        contrast = is_op("Contrast") | is_op("ContrastIncreasing")
        out = batch_ops.lut_stage(out, lut.to(torch.uint8), levels,
                                  (contrast, batch_ops.pil_contrast_lut(grey, factor.view(B, 1, 1), levels, H, W)),
                                  (is_op("AutoContrast"), batch_ops.pil_autocontrast_lut), is_op("Equalize"))

        blend = self._blend_kind[op].view(B, 1, 1)
        xf = out.float()
        degenerate = batch_ops.degenerate(xf, H, W, grey, blend == 1, True)
        return batch_ops.pil_blend(xf, degenerate, torch.where(blend > 0, factor.view(B, 1, 1), 1.0))
