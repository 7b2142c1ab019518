"""AutoAugment for ViT-CIFAR: the original's PIL ops for the workers path, and batched, sync-free
AutoAugment / RandAugment / TrivialAugmentWide for uint8 batches on any device.

The original (omihub777/ViT-CIFAR, which uses DeepVoltaire's AutoAugment) works on PIL images with
PIL's own resampling and rounding. `original_op` and `OriginalAutoAugment` give those semantics for
the DataLoader workers path, drawing from torch's global RNG so that worker seeding and per-epoch
reseeding make a run reproducible. The sub-policy tables are torchvision's, which list the same
sub-policies, so they cannot drift.

The device path keeps the training set on the device and augments each (B, C, H, W) uint8 batch
there with per-image parameters: `BatchAutoAugment`, `BatchRandAugment` and
`BatchTrivialAugmentWide` draw them and run each of their K op slots through batch_ops.py's
kernels, a fixed sequence of tensor ops whatever the batch size and whatever was drawn (batch_ops
says how and why). Only the ops that a slot can draw are computed for it (a static property of the
policy table). `ops="original"` reproduces the PIL ops bit for bit (tests/test_autoaugment.py
checks every (op, bin, sign)); `ops="torchvision"` reproduces torchvision's tensor `_apply_op`
(NEAREST, fill 0). `count_ops` counts the aten ops of one call on the meta device, for
`bench.py --audit`.
"""
import copy

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image, ImageEnhance, ImageOps

import batch_ops

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



# ---------------------------------------------------------------- the batched policies' tables

def _movable(value, device):
    if isinstance(value, (torch.Tensor, _Movable)):
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


def _is_blend(keys):
    return torch.tensor([OPS[o] in _BLEND for o, _, _ in keys])


class _Kernel(_Movable):
    """Applies drawn (op, bin, sign, applied) to a batch with batch_ops, one stage each for the
    geometric, lookup-table and blend ops of every slot. Tables are indexed by a key per image,
    key = (op * n_bins + bin) * 2 + (sign > 0), so an op that ignores its bin or sign has equal
    rows. Subclasses fill in the semantics (`original` = PIL, `torchvision` = torchvision's)."""

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
        # The enhance ops' factor, as a C float (PIL) or float32 (torchvision). The blend stage has
        # its own table, 1 for every op but Color and Sharpness, so that it leaves Brightness and
        # Contrast images alone.
        self.ratio = torch.tensor([self._factor(OPS[o], b, s) for o, b, s in keys], dtype=torch.float32)
        self.blend_ratio = torch.where(_is_blend(keys), self.ratio, 1.0)

    # -- table helpers
    def _signed_magnitude(self, op, b, s):
        m = float(self.magnitudes[op][b]) if op in self.magnitudes else 0.0
        return -m if op in self.signed and s == 0 else m

    def _factor(self, op, b, s):
        return 1.0 + self._signed_magnitude(op, b, s) if op in _ENHANCE else 1.0

    def _static_lut(self, op, b, s):
        if op == "Posterize":
            return batch_ops.posterize_lut(int(self.magnitudes[op][b]))
        if op == "Solarize":
            return batch_ops.solarize_lut(float(self.magnitudes[op][b]))
        if op == "Invert":
            return batch_ops.invert_lut()
        if op == "Brightness":
            return self._brightness_lut(self._factor(op, b, s))
        return torch.arange(256, dtype=torch.uint8)

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
                    cfg_of_key[(OP_INDEX[op] * self.n_bins + b) * 2 + s] = seen[(op, m)]
        return {"configs": configs, "cfg_of_key": cfg_of_key, **self._config_tables(configs)}

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
        def mask(name):  # only for the ops the slot can draw (a static property of the policy)
            return (op == OP_INDEX[name])[:, None, None] if name in ops else None
        out = x
        if ops & _GEOMETRIC:
            maps, frac = self._maps(self.geo[k], H, W, x.device)  # n,T*HW long; n,HW float64 or None
            out = batch_ops.resample(out, maps, frac, self.geo[k]["cfg_of_key"][key], self.fill)
        grey = self._grey(out) if ops & {"Contrast", "Color"} else None
        if ops & _LUT:
            levels = torch.arange(256, device=x.device)
            contrast = (mask("Contrast"), self._contrast_lut(grey, key, levels, H, W)) if "Contrast" in ops else None
            autocontrast = (mask("AutoContrast"), self._autocontrast_lut) if "AutoContrast" in ops else None
            out = batch_ops.lut_stage(out, self.static_lut[key].unsqueeze(1), levels, contrast, autocontrast,
                                      mask("Equalize"))
        if ops & _BLEND:
            xf, sharpness = out.float(), "Sharpness" in ops
            degenerate = batch_ops.degenerate(xf, H, W, grey, mask("Color") if sharpness else None, sharpness)
            out = self._blend(xf, degenerate, key, op, x.shape[1], H, W)
        return x.clone() if out is x else out


class _OriginalKernel(_Kernel):
    """The original's PIL semantics (see `original_op`)."""

    fill = 128
    # pil_maps concatenates the nearest maps (rotate, translate) before the bicubic ones (shear).
    _GEO_ORDER = ("Rotate", "TranslateX", "TranslateY", "ShearX", "ShearY")
    _grey, _autocontrast_lut = staticmethod(batch_ops.pil_grey), staticmethod(batch_ops.pil_autocontrast_lut)
    _brightness_lut, _maps = staticmethod(batch_ops.pil_brightness_lut), staticmethod(batch_ops.pil_maps)
    _config_tables = staticmethod(batch_ops.pil_geometry_tables)

    def __init__(self, slot_ops):
        super().__init__(_ORIGINAL_BINS, slot_ops, _ORIGINAL_RANGES, _ORIGINAL_SIGNED)

    def _contrast_lut(self, grey, key, levels, H, W):
        return batch_ops.pil_contrast_lut(grey, self.ratio[key][:, None, None], levels, H, W)

    def _blend(self, y, degenerate, key, op, C, H, W):
        return batch_ops.pil_blend(y, degenerate, self.blend_ratio[key][:, None, None])


class _TorchvisionKernel(_Kernel):
    """torchvision's tensor `_apply_op` semantics, interpolation NEAREST, fill None (black).

    `space` is torchvision's {op: (magnitudes, signed)}; `translate_fraction` set means the
    translate magnitudes are linspace(0, fraction * side, n_bins) for the call's image size."""

    _grey, _autocontrast_lut = staticmethod(batch_ops.tv_grey), staticmethod(batch_ops.tv_autocontrast_lut)
    _brightness_lut = staticmethod(batch_ops.tv_brightness_lut)

    def __init__(self, n_bins, slot_ops, space, translate_fraction=None):
        mags = {op: np.array([float(v) for v in m.flatten()], dtype=np.float64)
                for op, (m, _) in space.items() if m.ndim > 0}
        self.translate_fraction = translate_fraction
        super().__init__(n_bins, slot_ops, mags, {op for op, (_, s) in space.items() if s})
        self.complement = torch.tensor([1.0 - self._factor(OPS[o], b, s) for o, b, s in self._keys],
                                       dtype=torch.float32)
        self.blend_complement = torch.where(_is_blend(self._keys), self.complement, 0.0)

    def _config_tables(self, configs):
        translate = None if self.translate_fraction is not None else \
            np.stack([self.magnitudes["TranslateX"], self.magnitudes["TranslateY"]])
        return batch_ops.tv_geometry_tables(configs, self.signed, translate)

    def _maps(self, geo, H, W, dev):
        return batch_ops.tv_maps(geo, H, W, dev, self.translate_fraction, self.n_bins)

    def _contrast_lut(self, grey, key, levels, H, W):
        r, q = self.ratio[key][:, None, None], self.complement[key][:, None, None]
        return batch_ops.tv_contrast_lut(grey, r, q, levels, H, W)

    def _blend(self, y, degenerate, key, op, C, H, W):
        # Color on one channel and Sharpness on images thinner than 3 pixels are identities in
        # torchvision.
        r, q = self.blend_ratio[key], self.blend_complement[key]
        if C == 1 or H <= 2 or W <= 2:
            keep = (op == OP_INDEX["Color"]) if C == 1 else torch.zeros_like(op, dtype=torch.bool)
            if H <= 2 or W <= 2:
                keep = keep | (op == OP_INDEX["Sharpness"])
            r, q = torch.where(keep, 1.0, r), torch.where(keep, 0.0, q)
        return batch_ops.tv_blend(y, degenerate, r[:, None, None], q[:, None, None])


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
