"""The op vocabulary of the AutoAugment family and the kernels that apply drawn ops to a batch.

OPS names every op the policies can draw (Identity first) and sorts them into the stages the
kernels run (geometric, lookup table, blend). ORIGINAL_RANGES is the original's (DeepVoltaire's)
magnitude table, shared by autoaugment.py's PIL ops and OriginalKernel so they cannot drift.

A kernel applies drawn (op, bin, sign, applied) for every image of a (B, C, H, W) uint8 batch
through batch_ops.py, one stage each for the geometric, lookup-table and blend ops of every slot:
a fixed sequence of tensor ops whatever the batch size and whatever was drawn. `OriginalKernel`
has the original's PIL semantics, `TorchvisionKernel` torchvision's tensor `_apply_op`.
autoaugment.py's policies draw the parameters and own one kernel each.
"""
import numpy as np
import torch

import batch_ops

OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
       "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize", "Invert")
OP_INDEX = {name: i for i, name in enumerate(OPS)}

GEOMETRIC = frozenset({"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"})
STATIC_LUT = frozenset({"Brightness", "Posterize", "Solarize", "Invert"})
LUT = STATIC_LUT | {"Contrast", "AutoContrast", "Equalize"}
BLEND = frozenset({"Color", "Sharpness"})
ENHANCE = frozenset({"Brightness", "Color", "Contrast", "Sharpness"})

# AutoAugment's translate magnitude is this fraction of the image side (AutoAugment and RandAugment).
TRANSLATE_FRACTION = 150.0 / 331.0

# DeepVoltaire's magnitude ranges, 10 bins, in numpy float64 as the original computes them.
ORIGINAL_RANGES = {
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
ORIGINAL_SIGNED = frozenset({"ShearX", "ShearY", "TranslateX", "TranslateY"}) | ENHANCE
ORIGINAL_BINS = 10


# ---------------------------------------------------------------- tables and kernels

def movable(value, device):
    if isinstance(value, (torch.Tensor, Movable)):
        return value.to(device)
    if isinstance(value, list):
        return [movable(v, device) for v in value]
    if isinstance(value, dict):
        return {k: movable(v, device) for k, v in value.items()}
    return value


class Movable:
    def to(self, device):
        """Moves every table to `device` once and returns self, so calls copy nothing."""
        for name, value in vars(self).items():
            setattr(self, name, movable(value, device))
        return self


def _is_blend(keys):
    return torch.tensor([OPS[o] in BLEND for o, _, _ in keys])


class Kernel(Movable):
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
        return 1.0 + self._signed_magnitude(op, b, s) if op in ENHANCE else 1.0

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
        if ops & GEOMETRIC:
            maps, frac = self._maps(self.geo[k], H, W, x.device)  # n,T*HW long; n,HW float64 or None
            out = batch_ops.resample(out, maps, frac, self.geo[k]["cfg_of_key"][key], self.fill)
        grey = self._grey(out) if ops & {"Contrast", "Color"} else None
        if ops & LUT:
            levels = torch.arange(256, device=x.device)
            contrast = (mask("Contrast"), self._contrast_lut(grey, key, levels, H, W)) if "Contrast" in ops else None
            autocontrast = (mask("AutoContrast"), self._autocontrast_lut) if "AutoContrast" in ops else None
            out = batch_ops.lut_stage(out, self.static_lut[key].unsqueeze(1), levels, contrast, autocontrast,
                                      mask("Equalize"))
        if ops & BLEND:
            xf, sharpness = out.float(), "Sharpness" in ops
            degenerate = batch_ops.degenerate(xf, H, W, grey, mask("Color") if sharpness else None, sharpness)
            out = self._blend(xf, degenerate, key, op, x.shape[1], H, W)
        return x.clone() if out is x else out


class OriginalKernel(Kernel):
    """The original's PIL semantics (see `original_op`)."""

    fill = 128
    # pil_maps concatenates the nearest maps (rotate, translate) before the bicubic ones (shear).
    _GEO_ORDER = ("Rotate", "TranslateX", "TranslateY", "ShearX", "ShearY")
    _grey, _autocontrast_lut = staticmethod(batch_ops.pil_grey), staticmethod(batch_ops.pil_autocontrast_lut)
    _brightness_lut, _maps = staticmethod(batch_ops.pil_brightness_lut), staticmethod(batch_ops.pil_maps)
    _config_tables = staticmethod(batch_ops.pil_geometry_tables)

    def __init__(self, slot_ops):
        super().__init__(ORIGINAL_BINS, slot_ops, ORIGINAL_RANGES, ORIGINAL_SIGNED)

    def _contrast_lut(self, grey, key, levels, H, W):
        return batch_ops.pil_contrast_lut(grey, self.ratio[key][:, None, None], levels, H, W)

    def _blend(self, y, degenerate, key, op, C, H, W):
        return batch_ops.pil_blend(y, degenerate, self.blend_ratio[key][:, None, None])


class TorchvisionKernel(Kernel):
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
