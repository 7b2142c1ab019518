"""AutoAugment for ViT-CIFAR: the original's PIL ops for the workers path, and batched, sync-free
AutoAugment / RandAugment / TrivialAugmentWide for uint8 batches on any device.

The original (omihub777/ViT-CIFAR, which uses DeepVoltaire's AutoAugment) works on PIL images with
PIL's own resampling and rounding. `original_op` and `OriginalAutoAugment` give those semantics for
the DataLoader workers path, drawing from torch's global RNG so that worker seeding and per-epoch
reseeding make a run reproducible. The sub-policy tables are torchvision's, which list the same
sub-policies, so they cannot drift.

The device path keeps the training set on the device and augments each (B, C, H, W) uint8 batch
there with per-image parameters. Every call runs the same fixed sequence of tensor ops whatever the
batch size and whatever was drawn: no Python loop over images or over op groups, nothing that reads
a device value on the host, no data-dependent shapes, no host-to-device copies once the tables are on
the batch's device. Each of the K op slots of a policy runs three stages over the whole batch, and
each image goes through the one stage its op belongs to while the other two leave it exactly as it is:

  1. a per-(image, channel) 256-entry lookup table: Posterize, Solarize, Invert, Brightness, Contrast,
     AutoContrast, Equalize (their statistics come from batched reductions and a batched histogram);
  2. a resampling gather: ShearX/Y, TranslateX/Y, Rotate. The sampling maps depend only on
     (op, bin, sign) and the image size, so they are built for the few configurations a slot can draw
     (never for each image) and each image gathers through its own configuration's map;
  3. a blend with a degenerate image: Color (grey), Sharpness (3x3 smooth).

Only the ops that a slot can draw are computed for it (a static property of the policy table).
`ops="original"` reproduces the PIL ops bit for bit (tests/test_autoaugment.py checks every
(op, bin, sign)); `ops="torchvision"` reproduces torchvision's tensor `_apply_op` (NEAREST, fill 0).
`count_ops` counts the aten ops of one call on the meta device, for `bench.py --audit`.
"""
import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image, ImageEnhance, ImageOps
from torchvision.transforms.functional import _get_inverse_affine_matrix

OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
       "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize", "Invert")
OP_INDEX = {name: i for i, name in enumerate(OPS)}
_BY_LOWER = {name.lower(): name for name in OPS}

_GEOMETRIC = frozenset({"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"})
_STATIC_LUT = frozenset({"Brightness", "Posterize", "Solarize", "Invert"})
_LUT = _STATIC_LUT | {"Contrast", "AutoContrast", "Equalize"}
_BLEND = frozenset({"Color", "Sharpness"})
_ENHANCE = frozenset({"Brightness", "Color", "Contrast", "Sharpness"})

# AutoAugment's translate magnitude is this fraction of the image side (AutoAugment and RandAugment).
_TRANSLATE_FRACTION = 150.0 / 331.0


def _canonical(name):
    try:
        return _BY_LOWER[name.lower()]
    except KeyError:
        raise ValueError(f"unknown op {name!r}; choose from: {', '.join(OPS[1:])}") from None


def _policy_table(policy):
    """torchvision's 25 sub-policies [((name, prob, bin | None), (name, prob, bin | None)), ...]."""
    choices = {"cifar10": T.AutoAugmentPolicy.CIFAR10, "svhn": T.AutoAugmentPolicy.SVHN}
    if policy not in choices:
        raise ValueError(f"unknown AutoAugment policy {policy!r}; choose from: {', '.join(choices)}")
    return T.AutoAugment(choices[policy]).policies


# ---------------------------------------------------------------- the original's ops, in PIL

# DeepVoltaire's magnitude ranges, 10 bins, in numpy float64 as the original computes them.
_ORIGINAL_RANGES = {
    "ShearX": np.linspace(0, 0.3, 10),
    "ShearY": np.linspace(0, 0.3, 10),
    "TranslateX": np.linspace(0, 150 / 331, 10),
    "TranslateY": np.linspace(0, 150 / 331, 10),
    "Rotate": np.linspace(0, 30, 10),
    "Color": np.linspace(0.0, 0.9, 10),
    "Posterize": np.round(np.linspace(8, 4, 10), 0).astype(int),
    "Solarize": np.linspace(256, 0, 10),
    "Contrast": np.linspace(0.0, 0.9, 10),
    "Sharpness": np.linspace(0.0, 0.9, 10),
    "Brightness": np.linspace(0.0, 0.9, 10),
}
# The original draws a sign for these only; Rotate always turns counter-clockwise.
_ORIGINAL_SIGNED = frozenset({"ShearX", "ShearY", "TranslateX", "TranslateY"}) | _ENHANCE
_ORIGINAL_BINS = 10


def original_op(img, name, bin, sign):
    """One op of the original AutoAugment on a PIL image ("RGB" or "L"), at magnitude bin 0..9.

    `sign` (+1 or -1) negates the magnitude of the ops the original signs; the others ignore it."""
    op = _canonical(name)
    if img.mode not in ("RGB", "L"):
        raise ValueError(f"expected an RGB or L image, got mode {img.mode!r}")
    if not 0 <= bin < _ORIGINAL_BINS or sign not in (1, -1):
        raise ValueError(f"bin must be in 0..9 and sign +-1, got {bin}, {sign}")
    fill = 128 if img.mode == "L" else (128, 128, 128)
    m = _ORIGINAL_RANGES[op][bin] if op in _ORIGINAL_RANGES else 0
    affine, bicubic = Image.Transform.AFFINE, Image.Resampling.BICUBIC
    if op == "ShearX":
        return img.transform(img.size, affine, (1, m * sign, 0, 0, 1, 0), bicubic, fillcolor=fill)
    if op == "ShearY":
        return img.transform(img.size, affine, (1, 0, 0, m * sign, 1, 0), bicubic, fillcolor=fill)
    if op == "TranslateX":
        return img.transform(img.size, affine, (1, 0, m * img.size[0] * sign, 0, 1, 0), fillcolor=fill)
    if op == "TranslateY":
        return img.transform(img.size, affine, (1, 0, 0, 0, 1, m * img.size[1] * sign), fillcolor=fill)
    if op == "Rotate":
        rot = img.convert("RGBA").rotate(m)
        return Image.composite(rot, Image.new("RGBA", rot.size, (128,) * 4), rot).convert(img.mode)
    if op in _ENHANCE:
        return getattr(ImageEnhance, op)(img).enhance(1 + m * sign)
    if op == "Posterize":
        return ImageOps.posterize(img, int(m))
    if op == "Solarize":
        return ImageOps.solarize(img, m)
    if op == "AutoContrast":
        return ImageOps.autocontrast(img)
    if op == "Equalize":
        return ImageOps.equalize(img)
    if op == "Invert":
        return ImageOps.invert(img)
    return img.copy()


class OriginalAutoAugment:
    """The original's CIFAR10Policy / SVHNPolicy on PIL images, for DataLoader workers.

    Per image: a uniform sub-policy, then op k applied if U_k < p_k (the second op sees the first's
    output), with a uniform sign per signed op. All draws come from torch's global RNG, a fixed
    number per image, so worker seeding and per-epoch reseeding reproduce a run."""

    def __init__(self, policy="cifar10"):
        self.policy = policy
        self.sub_policies = [tuple((_canonical(n), p, 0 if b is None else b) for n, p, b in sub)
                             for sub in _policy_table(policy)]

    def draw(self):
        """{"sub_policy": int, "applied": [bool, bool], "sign": [+-1, +-1]} from torch's global RNG."""
        sub = int(torch.randint(len(self.sub_policies), ()))
        u, coin = torch.rand(2).tolist(), torch.randint(2, (2,)).tolist()
        return {"sub_policy": sub, "applied": [uk < prob for uk, (_, prob, _) in zip(u, self.sub_policies[sub])],
                "sign": [1 if c else -1 for c in coin]}

    def apply(self, img, params):
        for (name, _, b), on, sign in zip(self.sub_policies[params["sub_policy"]], params["applied"], params["sign"]):
            if on:
                img = original_op(img, name, b, sign)
        return img

    def __call__(self, img):
        return self.apply(img, self.draw())

    def __repr__(self):
        return f"{type(self).__name__}(policy={self.policy!r})"


# ---------------------------------------------------------------- batched kernels

def _u8(v):
    """Float values already clamped to [0, 255] to uint8, truncating as PIL's casts do. Through int16
    because it is several times faster than a direct float-to-uint8 conversion on the CPU."""
    return v.to(torch.int16).to(torch.uint8)


def _movable(value, device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, _Movable):
        return value.to(device)
    if isinstance(value, list):
        return [_movable(v, device) for v in value]
    if isinstance(value, dict):
        return {k: _movable(v, device) for k, v in value.items()}
    return value


class _Movable:
    def to(self, device):
        """Moves every table to `device` once and returns self, so calls copy nothing."""
        for name, value in vars(self).items():
            setattr(self, name, _movable(value, device))
        return self


class _Kernel(_Movable):
    """Applies drawn (op, bin, sign, applied) to a batch. Tables are indexed by a key per image,
    key = (op * n_bins + bin) * 2 + (sign > 0), so an op that ignores its bin or sign has equal rows.

    Subclasses fill in the semantics (`original` = PIL, `torchvision` = torchvision's tensor ops)."""

    fill = 0
    _GEO_ORDER = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")

    def __init__(self, n_bins, slot_ops, magnitudes, signed):
        # magnitudes: {op: float64 array (n_bins,)} of unsigned magnitudes; signed: set of op names.
        self.n_bins, self.slot_ops = n_bins, [frozenset(s) for s in slot_ops]
        self.magnitudes, self.signed = magnitudes, frozenset(signed)
        keys = [(o, b, s) for o in range(len(OPS)) for b in range(n_bins) for s in (0, 1)]
        self._keys = keys
        self.static_lut = torch.stack([self._static_lut(OPS[o], b, s) for o, b, s in keys])
        self.geo = [self._geometry_configs(ops) for ops in self.slot_ops]
        self._build_factors(keys)

    # -- table helpers
    def _signed_magnitude(self, op, b, s):
        m = float(self.magnitudes[op][b]) if op in self.magnitudes else 0.0
        return -m if op in self.signed and s == 0 else m

    def _geometry_configs(self, ops):
        """The (op, bin, sign) configurations of the geometric ops that a slot can draw, grouped by
        op, with a key -> configuration index table (0 is the identity)."""
        configs, seen = [], {}
        cfg_of_key = torch.zeros(len(self._keys), dtype=torch.long)
        for op in [o for o in self._GEO_ORDER if o in ops]:
            for b in range(self.n_bins):
                for s in (0, 1):
                    m = self._signed_magnitude(op, b, s)
                    if (op, m) not in seen:
                        seen[(op, m)] = len(configs) + 1
                        configs.append((op, b, s, m))
                    cfg_of_key[self._key(op, b, s)] = seen[(op, m)]
        return {"configs": configs, "cfg_of_key": cfg_of_key, **self._config_tables(configs)}

    def _key(self, op, b, s):
        return (OP_INDEX[op] * self.n_bins + b) * 2 + s

    @staticmethod
    def _is_blend(keys):
        return torch.tensor([OPS[o] in _BLEND for o, _, _ in keys])

    # -- the per-call pipeline
    def apply(self, images, op, bins, sign, applied):
        x = images
        B, C, H, W = x.shape
        for k, ops in enumerate(self.slot_ops):
            opk = torch.where(applied[:, k], op[:, k], 0)
            key = (opk * self.n_bins + bins[:, k]) * 2 + (sign[:, k] > 0).long()
            x = self._slot(x.reshape(B, C, H * W), opk, key, ops, k, H, W).view(B, C, H, W)
        return x

    def _slot(self, x, op, key, ops, k, H, W):
        # Each image's op belongs to one stage and the other two leave the image exactly as it is,
        # so a stage can take its statistics from its own input: for the images that use them,
        # that is the slot's input. Contrast's mean and Color's degenerate share one grey image.
        out = x
        if ops & _GEOMETRIC:
            out = self._geo_stage(out, key, self.geo[k], H, W)
        grey = self._grey(out) if ops & {"Contrast", "Color"} else None
        if ops & _LUT:
            out = self._lut_stage(out, op, key, ops, grey, H, W)
        if ops & _BLEND:
            out = self._blend_stage(out, op, key, ops, grey, H, W)
        return x.clone() if out is x else out

    def _geo_stage(self, x, key, geo, H, W):
        B, C, HW = x.shape
        maps, frac = self._maps(geo, H, W, x.device)  # n,T*HW long; n,HW float64 or None
        cfg = geo["cfg_of_key"][key]
        idx = maps.index_select(0, cfg).unsqueeze(1)  # 2-D index_select: much faster than 3-D
        src = F.pad(x, (0, 1), value=self.fill)  # index HW is the fill pixel
        if frac is None:
            return src.gather(2, idx.expand(B, C, HW))
        # One gather for the four taps of every pixel: (B, C, 4 * HW).
        taps = src.to(torch.int16).gather(2, idx.expand(B, C, 4 * HW))
        return _cubic(taps.view(B, C, 4, HW), frac.index_select(0, cfg).unsqueeze(1))

    def _lut_stage(self, x, op, key, ops, grey, H, W):
        B, C, HW = x.shape
        levels = torch.arange(256, device=x.device)
        lut = self.static_lut[key].unsqueeze(1)  # B,1,256
        if "Contrast" in ops:
            lut = torch.where((op == OP_INDEX["Contrast"])[:, None, None],
                              self._contrast_lut(grey, key, levels, H, W), lut)
        xl = x.long()
        if ops & {"AutoContrast", "Equalize"}:
            if "Equalize" in ops:
                hist = torch.zeros(B, C, 256, dtype=torch.int32, device=x.device)
                hist.scatter_add_(2, xl, torch.ones(1, 1, 1, dtype=torch.int32, device=x.device).expand(B, C, HW))
                present = hist > 0
                lo = torch.where(present, levels, 255).amin(dim=2, keepdim=True)
                hi = torch.where(present, levels, 0).amax(dim=2, keepdim=True)
            else:
                # Not over the uint8 image: torch.compile's CPU code for uint8 amin/amax is wrong
                # (torch 2.14 gives a minimum of 0 for a row of 60..123).
                lo, hi = xl.amin(dim=2, keepdim=True), xl.amax(dim=2, keepdim=True)
            if "AutoContrast" in ops:
                lut = torch.where((op == OP_INDEX["AutoContrast"])[:, None, None],
                                  self._autocontrast_lut(lo, hi, levels), lut)
            if "Equalize" in ops:
                lut = torch.where((op == OP_INDEX["Equalize"])[:, None, None],
                                  _equalize_lut(hist, hi, levels, HW), lut)
        return lut.expand(B, C, 256).gather(2, xl)

    def _blend_stage(self, x, op, key, ops, grey, H, W):
        B, C, HW = x.shape
        xf = x.float()
        if "Sharpness" in ops:
            degenerate = _smooth(xf.view(B, C, H, W)).view(B, C, HW)
            if "Color" in ops:
                degenerate = torch.where((op == OP_INDEX["Color"])[:, None, None], grey, degenerate)
        else:
            degenerate = grey.float()
        return self._blend(xf, degenerate, key, op, C, H, W)


def _equalize_lut(hist, hi, levels, n):
    """PIL's and torchvision's equalize, per (image, channel) from its histogram of n pixels:
    lut[i] = (step // 2 + #pixels below i) // step with step = (n - #pixels at the top level) // 255,
    clipped to 255, identity when step is 0. Integer quotients through float64 are exact here."""
    step = torch.div(n - hist.gather(2, hi), 255, rounding_mode="floor").double()
    below = (hist.cumsum(2, dtype=torch.int32) - hist).double()
    lut = torch.floor((torch.floor(step / 2) + below) / step.clamp(min=1)).clamp_(max=255)
    return torch.where(step > 0, lut, levels.double()).to(torch.uint8)


def _smooth(x):
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


def _cubic(taps, d):
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


class _OriginalKernel(_Kernel):
    """The original's PIL semantics (see `original_op`)."""

    fill = 128
    # _maps concatenates the nearest maps (rotate, translate) before the bicubic ones (shear).
    _GEO_ORDER = ("Rotate", "TranslateX", "TranslateY", "ShearX", "ShearY")

    def __init__(self, slot_ops):
        super().__init__(_ORIGINAL_BINS, slot_ops, _ORIGINAL_RANGES, _ORIGINAL_SIGNED)

    def _factor(self, op, b, s):
        return 1.0 + self._signed_magnitude(op, b, s) if op in _ENHANCE else 1.0

    def _build_factors(self, keys):
        # PIL's blend takes the factor as a C float. The blend stage has its own table, 1 for every
        # op but Color and Sharpness, so that it leaves Brightness and Contrast images alone.
        self.alpha = torch.tensor([self._factor(OPS[o], b, s) for o, b, s in keys], dtype=torch.float32)
        self.blend_alpha = torch.where(self._is_blend(keys), self.alpha, 1.0)

    def _static_lut(self, op, b, s):
        i = torch.arange(256)
        if op == "Posterize":
            bits = int(self.magnitudes[op][b])
            return (i & ~(2 ** (8 - bits) - 1)).to(torch.uint8)
        if op == "Solarize":
            return torch.where(i < float(self.magnitudes[op][b]), i, 255 - i).to(torch.uint8)
        if op == "Invert":
            return (255 - i).to(torch.uint8)
        if op == "Brightness":
            # blend(black, img, a): 0 + a * (i - 0) in C floats, truncated
            a = torch.tensor(self._factor(op, b, s), dtype=torch.float32)
            return _u8((i.float() * a + 0.0).clamp(0, 255))
        return i.to(torch.uint8)

    def _grey(self, x):
        # PIL's RGB -> L: (19595 R + 38470 G + 7471 B + 32768) >> 16, here in float32, where every
        # partial sum is an integer below 2 ** 24 and so exact. An L image is its own grey.
        if x.shape[1] == 1:
            return x
        grey = x[:, 0:1] * 19595.0
        grey += x[:, 1:2] * 38470.0
        grey += x[:, 2:3] * 7471.0
        return grey.add_(32768.0).mul_(1 / 65536).floor_()

    def _contrast_lut(self, grey, key, levels, H, W):
        # ImageEnhance.Contrast: degenerate = int(mean(L) + 0.5), mean as ImageStat computes it
        mean = torch.floor(grey.sum(dim=2, keepdim=True, dtype=torch.float64) / (H * W) + 0.5)
        mean = mean.float()
        a = self.alpha[key][:, None, None]
        return _u8((mean + a * (levels.float() - mean)).clamp_(0, 255))

    def _autocontrast_lut(self, lo, hi, levels):
        # ImageOps.autocontrast: int(i * scale + offset) clamped, scale = 255 / (hi - lo), in doubles
        lo, hi = lo.double(), hi.double()
        scale = torch.full_like(lo, 255.0) / (hi - lo)
        offset = -lo * scale
        lut = (levels.double() * scale + offset).clamp_(0, 255)  # then truncated by the cast
        return torch.where(hi > lo, lut, levels.double()).to(torch.uint8)

    def _blend(self, y, degenerate, key, op, C, H, W):
        # Image.blend(degenerate, image, a) = trunc(clip(deg + a * (img - deg))) in C floats
        a = self.blend_alpha[key][:, None, None]
        return _u8((y - degenerate).mul_(a).add_(degenerate).clamp_(0, 255))

    def _config_tables(self, configs):
        """Per-configuration constants of PIL's transforms that do not depend on the image size."""
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

    def _maps(self, geo, H, W, dev):
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
            nearest.append(_source_index(xx >> 16, yy >> 16, H, W))
        if "tra_m" in geo:
            # PIL's scale-affine loop: source column floor(c + 0.5 + x) with c = m * W * sign, where
            # the sign is already in m. PIL accumulates x by repeated += 1.0; the sums agree unless c
            # + 0.5 is within ~1e-13 of an integer, which none of the magnitudes come near.
            m, is_x = geo["tra_m"].view(-1, 1, 1), geo["tra_x"].view(-1, 1, 1)
            cx = torch.where(is_x, m * W, 0.0) + 0.5
            cy = torch.where(is_x, 0.0, m * H) + 0.5
            nearest.append(_source_index(torch.floor(cx + xs).long(), torch.floor(cy + ys).long(), H, W))
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


def _source_index(col, row, H, W):
    """Flat source index, or H * W (the fill pixel) where the source lies outside the image."""
    inside = (col >= 0) & (col < W) & (row >= 0) & (row < H)
    return torch.where(inside, row * W + col, H * W)


class _TorchvisionKernel(_Kernel):
    """torchvision's tensor `_apply_op` semantics, interpolation NEAREST, fill None (black).

    `space` is torchvision's {op: (magnitudes, signed)}; `translate_fraction` set means the
    translate magnitudes are linspace(0, fraction * side, n_bins) for the call's image size."""

    def __init__(self, n_bins, slot_ops, space, translate_fraction=None):
        mags = {op: np.array([float(v) for v in m.flatten()], dtype=np.float64)
                for op, (m, _) in space.items() if m.ndim > 0}
        self.translate_fraction = translate_fraction
        super().__init__(n_bins, slot_ops, mags, {op for op, (_, s) in space.items() if s})

    def _ratios(self, op, b, s):
        if op not in _ENHANCE:
            return 1.0, 0.0
        ratio = 1.0 + self._signed_magnitude(op, b, s)
        return ratio, 1.0 - ratio

    def _build_factors(self, keys):
        rq = [self._ratios(OPS[o], b, s) for o, b, s in keys]
        self.ratio = torch.tensor([r for r, _ in rq], dtype=torch.float32)
        self.complement = torch.tensor([q for _, q in rq], dtype=torch.float32)
        blend = self._is_blend(keys)  # the blend stage leaves Brightness and Contrast images alone
        self.blend_ratio = torch.where(blend, self.ratio, 1.0)
        self.blend_complement = torch.where(blend, self.complement, 0.0)

    def _static_lut(self, op, b, s):
        i = torch.arange(256, dtype=torch.uint8)
        if op == "Posterize":
            return i & -int(2 ** (8 - int(self.magnitudes[op][b])))
        if op == "Solarize":
            return torch.where(i >= float(self.magnitudes[op][b]), 255 - i, i)
        if op == "Invert":
            return 255 - i
        if op == "Brightness":
            r, q = self._ratios(op, b, s)
            return (r * i + q * torch.zeros_like(i)).clamp(0, 255).to(torch.uint8)
        return i

    def _grey(self, x):
        # rgb_to_grayscale: (0.2989 r + 0.587 g + 0.114 b) in float32, truncated
        if x.shape[1] == 1:
            return x
        return (0.2989 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).to(torch.uint8)

    def _contrast_lut(self, grey, key, levels, H, W):
        B = grey.shape[0]
        mean = torch.mean(grey.view(B, 1, H, W).float(), dim=(-3, -2, -1), keepdim=True).view(B, 1, 1)
        r, q = self.ratio[key][:, None, None], self.complement[key][:, None, None]
        return (r * levels.float() + q * mean).clamp(0, 255).to(torch.uint8)

    def _autocontrast_lut(self, lo, hi, levels):
        # autocontrast: bound / (max - min) is Tensor.__rtruediv__, a reciprocal times 255.
        minimum, maximum = lo.float(), hi.float()
        scale = 255.0 / (maximum - minimum)
        flat = torch.isfinite(scale).logical_not()
        minimum = torch.where(flat, 0.0, minimum)
        scale = torch.where(flat, 1.0, scale)
        return ((levels.float() - minimum) * scale).clamp(0, 255).to(torch.uint8)

    def _blend(self, y, degenerate, key, op, C, H, W):
        # _blend: ratio * img + (1 - ratio) * degenerate in float32, clamped, truncated. Color on one
        # channel and Sharpness on images thinner than 3 pixels are identities in torchvision.
        r, q = self.blend_ratio[key], self.blend_complement[key]
        if C == 1 or H <= 2 or W <= 2:
            keep = (op == OP_INDEX["Color"]) if C == 1 else torch.zeros_like(op, dtype=torch.bool)
            if H <= 2 or W <= 2:
                keep = keep | (op == OP_INDEX["Sharpness"])
            r, q = torch.where(keep, 1.0, r), torch.where(keep, 0.0, q)
        r, q = r[:, None, None], q[:, None, None]
        return _u8((y * r).add_(degenerate * q).clamp_(0, 255))

    def _config_tables(self, configs):
        """The size-independent 2x2 part of torchvision's inverse affine matrix per configuration."""
        if not configs:
            return {}
        mats, kind, bins, signs = [], [], [], []
        for op, b, s, m in configs:
            if op == "ShearX":
                mat = _get_inverse_affine_matrix([0.0, 0.0], 0.0, [0.0, 0.0], 1.0, [math.degrees(math.atan(m)), 0.0])
            elif op == "ShearY":
                mat = _get_inverse_affine_matrix([0.0, 0.0], 0.0, [0.0, 0.0], 1.0, [0.0, math.degrees(math.atan(m))])
            elif op == "Rotate":  # F.rotate passes -angle
                mat = _get_inverse_affine_matrix([0.0, 0.0], -m, [0.0, 0.0], 1.0, [0.0, 0.0])
            else:
                mat = _get_inverse_affine_matrix([0.0, 0.0], 0.0, [0.0, 0.0], 1.0, [0.0, 0.0])
            mats.append([mat[0], mat[1], mat[3], mat[4]])
            kind.append(("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate").index(op))
            bins.append(b)
            signs.append(-1.0 if op in self.signed and s == 0 else 1.0)
        tables = {"tv_m": torch.tensor(mats, dtype=torch.float64), "tv_kind": torch.tensor(kind),
                  "tv_bin": torch.tensor(bins), "tv_sign": torch.tensor(signs, dtype=torch.float64)}
        if self.translate_fraction is None:
            tables["tv_translate"] = torch.tensor(
                np.stack([self.magnitudes["TranslateX"], self.magnitudes["TranslateY"]]), dtype=torch.float64)
        return tables

    def _maps(self, geo, H, W, dev):
        """torchvision's grid for each configuration (its inverse matrix, _gen_affine_grid's float32
        maths), sampled with grid_sample NEAREST from an image of source indices: the map that
        torchvision's own call would sample through, fill where grid_sample pads with zeros."""
        HW = H * W
        m, kind = geo["tv_m"], geo["tv_kind"]
        n = m.shape[0]
        is_shear = kind < 2
        if self.translate_fraction is None:
            table = geo["tv_translate"]
            tmag = torch.where(kind == 2, table[0][geo["tv_bin"]], table[1][geo["tv_bin"]])
        else:
            lin_x = torch.linspace(0.0, self.translate_fraction * W, self.n_bins, device=dev)
            lin_y = torch.linspace(0.0, self.translate_fraction * H, self.n_bins, device=dev)
            tmag = torch.where(kind == 2, lin_x[geo["tv_bin"]], lin_y[geo["tv_bin"]]).double()
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


# ---------------------------------------------------------------- policies

class _BatchPolicy(_Movable):
    """A policy over (B, C, H, W) uint8 batches: `draw` per-image parameters, `apply` them."""

    num_slots = 1

    def _check(self, images):
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4 \
                or images.shape[1] not in (1, 3):
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            dtype = images.dtype if isinstance(images, torch.Tensor) else ""
            raise ValueError(f"expected a uint8 (B, 1|3, H, W) tensor, got {dtype} {shape}")

    def _signs(self, op, coin):
        return torch.where(self._signed[op] & (coin == 0), -1, 1)

    def draw(self, batch_size, device=None, generator=None):
        """Per-image parameters, drawn on `device` (default: the generator's, else the CPU) from
        `generator` (None: that device's global RNG): op, bin, sign, applied, each (B, K)."""
        if device is None:
            device = generator.device if generator is not None else torch.device("cpu")
        return self._draw(batch_size, torch.device(device), generator)

    @torch.no_grad()
    def apply(self, images, params):
        """`images` augmented with the drawn `params` (a new tensor; the input is not modified)."""
        self._check(images)
        return self.kernel.apply(images, params["op"], params["bin"], params["sign"], params["applied"])

    @torch.no_grad()
    def __call__(self, images, generator=None):
        self._check(images)
        if generator is None or generator.device == images.device:
            params = self.draw(images.shape[0], images.device, generator)
        else:
            # A generator on another device still works, at the cost of copying the parameters.
            params = {k: v.to(images.device, non_blocking=True)
                      for k, v in self.draw(images.shape[0], generator.device, generator).items()}
        return self.apply(images, params)

    def __repr__(self):
        return f"{type(self).__name__}({self._args})"


class BatchAutoAugment(_BatchPolicy):
    """AutoAugment, policy "cifar10" | "svhn": one uniform sub-policy per image, op k applied with
    its probability. `ops="original"` (default): the original's PIL semantics; "torchvision":
    torchvision's AutoAugment (NEAREST, black fill, signed Rotate)."""

    num_slots = 2

    def __init__(self, policy="cifar10", ops="original"):
        if ops not in ("original", "torchvision"):
            raise ValueError(f"ops must be 'original' or 'torchvision', got {ops!r}")
        self.policy, self.ops = policy, ops
        self._args = f"policy={policy!r}, ops={ops!r}"
        subs = _policy_table(policy)
        self._op = torch.tensor([[OP_INDEX[n] for n, _, _ in s] for s in subs])
        self._prob = torch.tensor([[p for _, p, _ in s] for s in subs])
        self._bin = torch.tensor([[0 if b is None else b for _, _, b in s] for s in subs])
        slot_ops = [{"Identity"} | {n for s in subs for n in [s[k][0]]} for k in range(2)]
        if ops == "original":
            self.kernel = _OriginalKernel(slot_ops)
            signed = _ORIGINAL_SIGNED
        else:
            tv = T.AutoAugment(T.AutoAugmentPolicy(policy))
            space = tv._augmentation_space(10, (32, 32))
            _check_translate_fraction(lambda size: tv._augmentation_space(10, size), 10)
            self.kernel = _TorchvisionKernel(10, slot_ops, space, _TRANSLATE_FRACTION)
            signed = {n for n, (_, s) in space.items() if s}
        self._signed = torch.tensor([n in signed for n in OPS])

    def _draw(self, batch_size, device, generator):
        sub = torch.randint(len(self._op), (batch_size,), device=device, generator=generator)
        u = torch.rand((batch_size, 2), device=device, generator=generator)
        coin = torch.randint(2, (batch_size, 2), device=device, generator=generator)
        op, prob, bins = self._op[sub], self._prob[sub], self._bin[sub]
        # The original applies an op if U < p, torchvision if U <= p.
        applied = u < prob if self.ops == "original" else u <= prob
        return {"op": op, "bin": bins, "sign": self._signs(op, coin), "applied": applied, "sub_policy": sub}


class BatchRandAugment(_BatchPolicy):
    """torchvision RandAugment: `num_ops` uniform ops per image at bin `magnitude`, random signs."""

    def __init__(self, num_ops=2, magnitude=9, num_magnitude_bins=31):
        if not 0 <= magnitude < num_magnitude_bins:
            raise ValueError(f"magnitude {magnitude} outside [0, {num_magnitude_bins})")
        self.num_ops, self.magnitude, self.num_magnitude_bins = num_ops, magnitude, num_magnitude_bins
        self.num_slots = num_ops
        self._args = f"num_ops={num_ops}, magnitude={magnitude}, num_magnitude_bins={num_magnitude_bins}"
        tv = T.RandAugment(num_ops, magnitude, num_magnitude_bins)
        space = tv._augmentation_space(num_magnitude_bins, (32, 32))
        _check_translate_fraction(lambda size: tv._augmentation_space(num_magnitude_bins, size), num_magnitude_bins)
        self.op_names = list(space)
        self.kernel = _TorchvisionKernel(num_magnitude_bins, [set(space)] * num_ops, space, _TRANSLATE_FRACTION)
        self._choices = torch.tensor([OP_INDEX[n] for n in space])
        self._signed = torch.tensor([n in space and space[n][1] for n in OPS])

    def _draw(self, batch_size, device, generator):
        shape = (batch_size, self.num_ops)
        op = self._choices[torch.randint(len(self._choices), shape, device=device, generator=generator)]
        coin = torch.randint(2, shape, device=device, generator=generator)
        return {"op": op, "bin": torch.full(shape, self.magnitude, device=device),
                "sign": self._signs(op, coin), "applied": torch.ones(shape, dtype=torch.bool, device=device)}


class BatchTrivialAugmentWide(_BatchPolicy):
    """torchvision TrivialAugmentWide: one uniform op per image with a uniform magnitude bin."""

    def __init__(self, num_magnitude_bins=31):
        self.num_magnitude_bins = num_magnitude_bins
        self._args = f"num_magnitude_bins={num_magnitude_bins}"
        space = T.TrivialAugmentWide(num_magnitude_bins)._augmentation_space(num_magnitude_bins)
        self.op_names = list(space)
        self.kernel = _TorchvisionKernel(num_magnitude_bins, [set(space)], space)
        self._choices = torch.tensor([OP_INDEX[n] for n in space])
        self._signed = torch.tensor([n in space and space[n][1] for n in OPS])

    def _draw(self, batch_size, device, generator):
        shape = (batch_size, 1)
        op = self._choices[torch.randint(len(self._choices), shape, device=device, generator=generator)]
        bins = torch.randint(self.num_magnitude_bins, shape, device=device, generator=generator)
        coin = torch.randint(2, shape, device=device, generator=generator)
        return {"op": op, "bin": bins, "sign": self._signs(op, coin),
                "applied": torch.ones(shape, dtype=torch.bool, device=device)}


def _check_translate_fraction(space_at, n_bins):
    """The device builds translate magnitudes as linspace(0, 150/331 * side, n_bins); fail loudly if
    torchvision's space ever stops being that."""
    for h, w in ((32, 32), (24, 40)):
        space = space_at((h, w))
        for op, side in (("TranslateX", w), ("TranslateY", h)):
            if not torch.equal(space[op][0], torch.linspace(0.0, _TRANSLATE_FRACTION * side, n_bins)):
                raise RuntimeError(f"torchvision's {op} magnitudes changed; update autoaugment.py")


# ---------------------------------------------------------------- audit

def count_ops(policy, batch_size, image_shape=(3, 32, 32), device="meta"):
    """The counts (sync_audit.count_ops) of one `policy(images)` call on a uint8 (batch_size,
    *image_shape) batch on `device`; a copy of the policy is moved there first."""
    from sync_audit import count_ops as count
    moved = copy.deepcopy(policy).to(device)
    return count(moved, batch_size, image_shape, device, torch.uint8)
