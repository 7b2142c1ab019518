"""Batched, per-image AutoAugment / RandAugment / TrivialAugmentWide for uint8 tensors on any device.

The trainer keeps the whole training set on the device as one uint8 tensor and augments each batch
there, so there are no PIL transforms in DataLoader workers. torchvision's tensor transforms draw one
parameter set per call, so calling them on a batch would give every image the same augmentation.
Here every image draws its own parameters (sub-policy or ops, apply coin, magnitude sign and, for
TrivialAugment, the magnitude bin). Images that drew the same (op, signed magnitude) form a group, and
each group is gathered, transformed by one torchvision functional call, and scattered back, so the maths
is torchvision's (`torchvision.transforms.autoaugment._apply_op`, interpolation NEAREST, fill None).

Policy tables and magnitude spaces come from torchvision's own classes, so they cannot drift.
All randomness comes from the generator passed in, so the same generator state gives the same output.
`draw()` exposes the per-image parameters that `__call__` uses, so tests can check their distribution.
"""
import math

import torch
import torchvision.transforms as T
import torchvision.transforms.functional as F
import torchvision.transforms.v2.functional as F2

_NEAREST = T.InterpolationMode.NEAREST


def _shear(img, sx, sy):
    return F.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[sx, sy],
                    interpolation=_NEAREST, fill=None, center=[0, 0])


def _translate(img, tx, ty):
    return F.affine(img, angle=0.0, translate=[tx, ty], scale=1.0, shear=[0.0, 0.0],
                    interpolation=_NEAREST, fill=None)


_OPS = {
    "Identity": lambda x, m: x,
    "ShearX": lambda x, m: _shear(x, math.degrees(math.atan(m)), 0.0),
    "ShearY": lambda x, m: _shear(x, 0.0, math.degrees(math.atan(m))),
    "TranslateX": lambda x, m: _translate(x, int(m), 0),
    "TranslateY": lambda x, m: _translate(x, 0, int(m)),
    "Rotate": lambda x, m: F.rotate(x, m, interpolation=_NEAREST, fill=None),
    "Brightness": lambda x, m: F.adjust_brightness(x, 1.0 + m),
    "Color": lambda x, m: F.adjust_saturation(x, 1.0 + m),
    "Contrast": lambda x, m: F.adjust_contrast(x, 1.0 + m),
    "Sharpness": lambda x, m: F.adjust_sharpness(x, 1.0 + m),
    "Posterize": lambda x, m: F.posterize(x, int(m)),
    "Solarize": lambda x, m: F.solarize(x, m),
    "AutoContrast": lambda x, m: F.autocontrast(x),
    # v1 equalize loops over images and channels in Python; the v2 kernel is vectorised and gives
    # bit-identical results (checked in the tests). The other v2 colour kernels round differently.
    "Equalize": lambda x, m: F2.equalize(x),
    "Invert": lambda x, m: F.invert(x),
}


@torch.no_grad()
def apply_op(images: torch.Tensor, op_name: str, magnitude: float) -> torch.Tensor:
    """One torchvision op with one magnitude on a (B, C, H, W) uint8 batch; `_apply_op` semantics."""
    return _OPS[op_name](images, magnitude)


def _table(space):
    """torchvision's {op: (magnitudes, signed)} as (names, (n_ops, n_bins) magnitudes, signed)."""
    names = list(space)
    n_bins = max(m.numel() for m, _ in space.values())
    mags = torch.zeros(len(names), n_bins)  # magnitude-less ops read 0.0, as torchvision uses
    for i, (m, _) in enumerate(space.values()):
        if m.ndim > 0:
            mags[i, : m.numel()] = m.float()
    return names, mags, torch.tensor([s for _, s in space.values()])


def _params(op, bins, coin, applied, table):
    """Signed magnitudes from drawn (op, bin, sign coin); all tensors are (B, K) on the generator's device."""
    _, mags, signed = table
    mags, signed = mags.to(op.device), signed.to(op.device)
    sign = torch.where(signed[op] & (coin == 0), -1, 1)
    return {"op": op, "bin": bins, "sign": sign, "applied": applied, "magnitude": mags[op, bins] * sign}


class _BatchPolicy:
    op_names: list

    def draw(self, batch_size, generator, image_size) -> dict:
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected uint8 (B, 1|3, H, W), got {images.dtype} {tuple(images.shape)}")
        p = self.draw(images.shape[0], generator, tuple(images.shape[-2:]))
        op, mag, on = p["op"].cpu(), p["magnitude"].cpu(), p["applied"].cpu()
        out = images.clone()
        for k in range(op.shape[1]):  # slots run in order: the second op sees the first one's output
            idx = on[:, k].nonzero().squeeze(1)
            if idx.numel() == 0:
                continue
            keys = torch.stack([op[idx, k].double(), mag[idx, k].double()], 1)
            groups, gid, counts = torch.unique(keys, dim=0, return_inverse=True, return_counts=True)
            # Sorting by group makes each group a contiguous slice: one gather and one scatter per
            # slot, and a single host-to-device index copy, however many groups there are.
            perm = idx[torch.argsort(gid, stable=True)].to(images.device, non_blocking=True)
            x, start = out[perm], 0
            for (o, m), c in zip(groups.tolist(), counts.tolist()):
                if self.op_names[int(o)] != "Identity":
                    x[start:start + c] = apply_op(x[start:start + c], self.op_names[int(o)], m)
                start += c
            out[perm] = x
        return out


class BatchAutoAugment(_BatchPolicy):
    """torchvision AutoAugment (policy "cifar10" | "svhn" | "imagenet"), one sub-policy draw per image."""

    def __init__(self, policy: str = "cifar10"):
        self.policy = T.AutoAugmentPolicy(policy.lower())
        self._tv = T.AutoAugment(self.policy)
        self.op_names = list(self._tv._augmentation_space(10, (32, 32)))
        subs = self._tv.policies  # [((name, prob, magnitude_id | None), (name, prob, id | None)), ...]
        self._op = torch.tensor([[self.op_names.index(n) for n, _, _ in s] for s in subs])
        self._prob = torch.tensor([[p for _, p, _ in s] for s in subs])
        self._bin = torch.tensor([[0 if i is None else i for _, _, i in s] for s in subs])

    def draw(self, batch_size, generator, image_size):
        dev = generator.device
        sub = torch.randint(len(self._op), (batch_size,), generator=generator, device=dev)
        u = torch.rand((batch_size, 2), generator=generator, device=dev)
        coin = torch.randint(2, (batch_size, 2), generator=generator, device=dev)
        op, prob, bins = self._op.to(dev)[sub], self._prob.to(dev)[sub], self._bin.to(dev)[sub]
        table = _table(self._tv._augmentation_space(10, image_size))  # torchvision uses 10 bins
        p = _params(op, bins, coin, u <= prob, table)  # `<=` as torchvision
        p["sub_policy"] = sub
        return p


class BatchRandAugment(_BatchPolicy):
    """torchvision RandAugment: `num_ops` uniform ops per image at fixed bin `magnitude`, random signs."""

    def __init__(self, num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31):
        if not 0 <= magnitude < num_magnitude_bins:
            raise ValueError(f"magnitude {magnitude} outside [0, {num_magnitude_bins})")
        self.num_ops, self.magnitude, self.num_magnitude_bins = num_ops, magnitude, num_magnitude_bins
        self._tv = T.RandAugment(num_ops, magnitude, num_magnitude_bins)
        self.op_names = list(self._tv._augmentation_space(num_magnitude_bins, (32, 32)))

    def draw(self, batch_size, generator, image_size):
        dev, shape = generator.device, (batch_size, self.num_ops)
        op = torch.randint(len(self.op_names), shape, generator=generator, device=dev)
        coin = torch.randint(2, shape, generator=generator, device=dev)
        bins = torch.full(shape, self.magnitude, device=dev)
        applied = torch.ones(shape, dtype=torch.bool, device=dev)
        table = _table(self._tv._augmentation_space(self.num_magnitude_bins, image_size))
        return _params(op, bins, coin, applied, table)


class BatchTrivialAugmentWide(_BatchPolicy):
    """torchvision TrivialAugmentWide: one uniform op per image with a uniform magnitude bin."""

    def __init__(self, num_magnitude_bins: int = 31):
        self.num_magnitude_bins = num_magnitude_bins
        self._table = _table(T.TrivialAugmentWide(num_magnitude_bins)._augmentation_space(num_magnitude_bins))
        self.op_names = self._table[0]

    def draw(self, batch_size, generator, image_size):
        dev, shape = generator.device, (batch_size, 1)
        op = torch.randint(len(self.op_names), shape, generator=generator, device=dev)
        bins = torch.randint(self.num_magnitude_bins, shape, generator=generator, device=dev)
        coin = torch.randint(2, shape, generator=generator, device=dev)
        applied = torch.ones(shape, dtype=torch.bool, device=dev)
        return _params(op, bins, coin, applied, self._table)


POLICIES = {
    "autoaugment-cifar10": lambda **kw: BatchAutoAugment("cifar10", **kw),
    "autoaugment-svhn": lambda **kw: BatchAutoAugment("svhn", **kw),
    "autoaugment-imagenet": lambda **kw: BatchAutoAugment("imagenet", **kw),
    "randaugment": BatchRandAugment,
    "trivialaugment": BatchTrivialAugmentWide,
}


def build_batch_policy(name: str, **kw):
    if name not in POLICIES:
        raise ValueError(f"unknown augmentation policy {name!r}; choose from: {', '.join(POLICIES)}")
    return POLICIES[name](**kw)
