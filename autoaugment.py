"""AutoAugment for ViT-CIFAR: the original's PIL ops for the workers path, and batched, sync-free
AutoAugment / RandAugment / TrivialAugmentWide for uint8 batches on any device.

The original (omihub777/ViT-CIFAR, which uses DeepVoltaire's AutoAugment) works on PIL images with
PIL's own resampling and rounding. `original_op` and `OriginalAutoAugment` give those semantics for
the DataLoader workers path, drawing from torch's global RNG so that worker seeding and per-epoch
reseeding make a run reproducible. The sub-policy tables are torchvision's, which list the same
sub-policies, so they cannot drift.

The device path keeps the training set on the device and augments each (B, C, H, W) uint8 batch
there with per-image parameters: `BatchAutoAugment`, `BatchRandAugment` and
`BatchTrivialAugmentWide` draw them and run each of their K op slots through a kernel of
policy_kernels.py (built on batch_ops.py), a fixed sequence of tensor ops whatever the batch size
and whatever was drawn (batch_ops says how and why). Only the ops that a slot can draw are computed for it (a static property of the
policy table). `ops="original"` reproduces the PIL ops bit for bit (tests/test_autoaugment.py
checks every (op, bin, sign)); `ops="torchvision"` reproduces torchvision's tensor `_apply_op`
(NEAREST, fill 0). `count_ops` counts the aten ops of one call on the meta device, for
`bench.py --audit`.
"""
import copy

import torch
import torchvision.transforms as T
from PIL import Image, ImageEnhance, ImageOps

from policy_kernels import (ENHANCE, OP_INDEX, OPS, ORIGINAL_BINS, ORIGINAL_RANGES, ORIGINAL_SIGNED,
                            TRANSLATE_FRACTION, Movable, OriginalKernel, TorchvisionKernel)

_BY_LOWER = {name.lower(): name for name in OPS}


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

def original_op(img, name, bin, sign):
    """One op of the original AutoAugment on a PIL image ("RGB" or "L"), at magnitude bin 0..9.

    `sign` (+1 or -1) negates the magnitude of the ops the original signs; the others ignore it."""
    op = _canonical(name)
    if img.mode not in ("RGB", "L"):
        raise ValueError(f"expected an RGB or L image, got mode {img.mode!r}")
    if not 0 <= bin < ORIGINAL_BINS or sign not in (1, -1):
        raise ValueError(f"bin must be in 0..9 and sign +-1, got {bin}, {sign}")
    fill = 128 if img.mode == "L" else (128, 128, 128)
    m = ORIGINAL_RANGES[op][bin] if op in ORIGINAL_RANGES else 0
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
    if op in ENHANCE:
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


# ---------------------------------------------------------------- policies

class _BatchPolicy(Movable):
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
            self.kernel = OriginalKernel(slot_ops)
            signed = ORIGINAL_SIGNED
        else:
            tv = T.AutoAugment(T.AutoAugmentPolicy(policy))
            space = tv._augmentation_space(10, (32, 32))
            _check_translate_fraction(lambda size: tv._augmentation_space(10, size), 10)
            self.kernel = TorchvisionKernel(10, slot_ops, space, TRANSLATE_FRACTION)
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
        self.kernel = TorchvisionKernel(num_magnitude_bins, [set(space)] * num_ops, space, TRANSLATE_FRACTION)
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
        self.kernel = TorchvisionKernel(num_magnitude_bins, [set(space)], space)
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
            if not torch.equal(space[op][0], torch.linspace(0.0, TRANSLATE_FRACTION * side, n_bins)):
                raise RuntimeError(f"torchvision's {op} magnitudes changed; update autoaugment.py")


# ---------------------------------------------------------------- audit

def count_ops(policy, batch_size, image_shape=(3, 32, 32), device="meta"):
    """The counts (sync_audit.count_ops) of one `policy(images)` call on a uint8 (batch_size,
    *image_shape) batch on `device`; a copy of the policy is moved there first."""
    from sync_audit import count_ops as count
    moved = copy.deepcopy(policy).to(device)
    return count(moved, batch_size, image_shape, device, torch.uint8)
