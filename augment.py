"""Batched augmentations that run on whatever device the batch is on.

The input pipeline has three stages (loaders.py wires them together):
  1. uint8 per-image geometry and colour: random crop with padding, flip, and a policy
     (AutoAugment / RandAugment / TrivialAugment / timm's RandAugment). Either on the device
     (batched, below, in autoaugment.py and timm_augment.py) or in DataLoader workers with PIL
     transforms.
  2. float per-image extras on the normalised batch: RandomCropPaste, Cutout, random erasing
     (extras.py).
  3. batch mixing in the training step: MixUp / CutMix.

By default every op computes what omihub777/ViT-CIFAR computed; where this differs from the
papers' reference code it says so.

Every op draws its random numbers on the batch's device, from `generator` (None: that device's
global RNG, which is what torch.compile can trace and what the trainer reseeds each epoch), and
runs a fixed sequence of tensor ops per call: nothing drawn ever reaches Python (no `.item()`,
no `if` on a drawn value, no boolean-mask indexing), so the host never waits for the device and
the same code works on `meta` tensors and under `torch.compile(fullgraph=True)`. Per-image boxes
are masks made from `arange` comparisons; per-batch decisions are `torch.where` selections.
`count_ops` audits that property.

Mixers return `(x, y_a, y_b, lam)` with `y_b` always a tensor and `lam` a 0-dim float tensor
(1 when the batch was left unmixed), so the training step has one shape of code.
"""
import torch
import torch.nn.functional as F

from utils import Registry, UserError


def _beta(alpha, shape, device, generator):
    # torch.distributions cannot take a generator; Beta(a, a) = Ga / (Ga + Gb).
    conc = torch.full(shape, float(alpha), device=device)
    ga = torch._standard_gamma(conc, generator=generator)
    gb = torch._standard_gamma(conc, generator=generator)
    # Both gammas can underflow to 0 for a tiny alpha; the limit is symmetric, so take the middle.
    return (ga / (ga + gb)).nan_to_num(0.5)


def _below(u, n):
    """Uniform integers in [0, n) from uniforms in [0, 1); n an int or an integer tensor. The
    clamp guards against a backend whose uniform can round up to 1."""
    k = (u * n).long()
    return k.clamp(max=n - 1) if isinstance(n, int) else torch.minimum(k, n - 1)


def _box_mask(h, w, top, left, box_h, box_w):
    """B,H,W boolean masks of the boxes [top, top+box_h) x [left, left+box_w), one per image."""
    ys = torch.arange(h, device=top.device)[None, :, None]
    xs = torch.arange(w, device=top.device)[None, None, :]
    top, left, box_h, box_w = (t[:, None, None] for t in (top, left, box_h, box_w))
    return (ys >= top) & (ys < top + box_h) & (xs >= left) & (xs < left + box_w)


# ---------------------------------------------------------------- stage 1: uint8, per image

def random_crop(x, padding, generator=None):
    """torchvision's RandomCrop(size, padding, fill=0) with an independent offset per image."""
    if padding <= 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    offset = torch.randint(0, 2 * padding + 1, (2, b), device=x.device, generator=generator)
    rows = (offset[0][:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # B,1,H,1
    cols = (offset[1][:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # B,1,1,W
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def random_hflip(x, generator=None, p=0.5):
    """torchvision's RandomHorizontalFlip(p), drawn per image."""
    flip = torch.rand(x.shape[0], device=x.device, generator=generator) < p
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


# ---------------------------------------------------------------- stage 3: batch mixing
#
# A mixer is a per-pixel weight map W and a lam: x = W * x + (1 - W) * x[perm]. MixUp's W is
# lam everywhere, CutMix's is 0 inside its box and 1 outside (exactly the pasted batch, for
# finite inputs), "unmixed" is 1. Choosing between them per batch is then a `torch.where` on W
# and lam, and the batch is blended once whatever was chosen.

def _blend(x, y, perm, weight, lam):
    weight = weight.to(x.dtype)
    return weight * x + (1 - weight) * x[perm], y, y[perm], lam


class MixUp:
    """Mixup (Zhang et al. 2018), as ViT-CIFAR: one lam ~ Beta(alpha, alpha) for the batch,
    mixed with a shuffled copy of itself."""

    def __init__(self, alpha=1.0):
        self.alpha = alpha

    def draw(self, x, generator=None):
        return {"lam": _beta(self.alpha, (), x.device, generator)}

    def weights(self, params, h, w):
        """(weight map broadcastable to 1,1,H,W, lam)."""
        return params["lam"], params["lam"]

    def apply(self, x, y, perm, params):
        return _blend(x, y, perm, *self.weights(params, *x.shape[-2:]))

    def __call__(self, x, y, generator=None):
        perm = torch.randperm(x.shape[0], device=x.device, generator=generator)
        return self.apply(x, y, perm, self.draw(x, generator))


class CutMix:
    """CutMix (Yun et al. 2019), as ViT-CIFAR: lam ~ Beta(beta, beta), a box centred at
    (r_x, r_y) ~ U(0, S)^2 with side S * sqrt(1 - lam), clipped at the border, is pasted from a
    shuffled copy of the batch; lam is then 1 - (box area) / S^2.

    As in the original the half-side is floored before the box is
    placed, x1 = int(clip(r_x - r_w // 2, 0, S)), so boxes are slightly smaller than sqrt(1 - lam)
    says: mean lam is ~0.70 at beta=1, not ~0.68.
    """

    def __init__(self, beta=1.0):
        self.beta = beta

    def draw(self, x, generator=None):
        u = torch.rand(2, device=x.device, generator=generator)
        return {"lam": _beta(self.beta, (), x.device, generator), "u_x": u[0], "u_y": u[1]}

    @staticmethod
    def box(params, h, w):
        """(x1, x2, y1, y2) as float tensors, elementwise over the params' shape."""
        cut_rat = torch.sqrt(1.0 - params["lam"])
        bounds = []
        for size, u in ((w, params["u_x"]), (h, params["u_y"])):
            centre, half = u * size, torch.floor(size * cut_rat / 2)
            bounds += [(centre - half).clamp(0, size).floor(), (centre + half).clamp(0, size).floor()]
        return tuple(bounds)

    def weights(self, params, h, w):
        """(1,1,H,W weight map: 0 inside the box, 1 outside; lam = the kept fraction)."""
        x1, x2, y1, y2 = self.box(params, h, w)
        xs = torch.arange(w, device=x1.device)[None, :]
        ys = torch.arange(h, device=x1.device)[:, None]
        box = (ys >= y1) & (ys < y2) & (xs >= x1) & (xs < x2)
        lam = 1 - (x2 - x1) * (y2 - y1) / (h * w)
        return (~box).float()[None, None], lam

    def apply(self, x, y, perm, params):
        return _blend(x, y, perm, *self.weights(params, *x.shape[-2:]))

    def __call__(self, x, y, generator=None):
        perm = torch.randperm(x.shape[0], device=x.device, generator=generator)
        return self.apply(x, y, perm, self.draw(x, generator))


class BatchMixer:
    """With probability `prob` mixes a batch with one of `mixers`, picked uniformly per batch;
    otherwise leaves it unmixed (y_b = y_a, lam = 1). Every mixer draws every call, so what a
    batch costs does not depend on what it drew. Returns (x, y_a, y_b, lam)."""

    def __init__(self, mixers, prob=1.0):
        if not mixers:
            raise ValueError("BatchMixer needs at least one mixer")
        self.mixers, self.prob = list(mixers), prob

    def __call__(self, x, y, generator=None):
        h, w = x.shape[-2:]
        perm = torch.randperm(x.shape[0], device=x.device, generator=generator)
        u = torch.rand(2, device=x.device, generator=generator)
        weight, lam = self.mixers[0].weights(self.mixers[0].draw(x, generator), h, w)
        pick = _below(u[1], len(self.mixers))
        for i, mixer in enumerate(self.mixers[1:], 1):
            w_i, lam_i = mixer.weights(mixer.draw(x, generator), h, w)
            weight, lam = torch.where(pick == i, w_i, weight), torch.where(pick == i, lam_i, lam)
        mix = u[0] < self.prob
        weight, lam = torch.where(mix, weight, 1.0), torch.where(mix, lam, 1.0)
        x, y_a, y_b, lam = _blend(x, y, perm, weight, lam)
        return x, y_a, torch.where(mix, y_b, y_a), lam


# ---------------------------------------------------------------- op-count audit

# Ops that make the host wait for the device (or whose output shape depends on the data).
def count_ops(fn, batch_size, shape=(3, 32, 32), device="meta", dtype=torch.float32, with_labels=False,
              num_classes=10):
    """sync_audit.count_ops: the ops, syncs, blocking copies and host inputs of one fn(x) (or
    fn(x, y)) call, counted on the meta device by default."""
    from sync_audit import count_ops as count
    return count(fn, batch_size, shape, device, dtype, with_labels, num_classes)


# ---------------------------------------------------------------- build from settings

MIX_CHOICES = ("original", "random")


def build_mixer(*, mixup=False, cutmix=False, mixup_alpha=1.0, cutmix_beta=1.0, mix_prob=None, choice="original"):
    """The batch mixer for these settings, or None when neither is on.

    choice="original" (ViT-CIFAR): with both on, every batch gets CutMix and Mixup is ignored.
    choice="random": each mixed batch picks Mixup or CutMix uniformly.
    mix_prob, the probability a batch is mixed at all, defaults as in the original: 0.8 for
    Mixup alone, else 1.
    """
    if choice not in MIX_CHOICES:
        raise UserError(f"unknown mixing choice {choice!r}; choose from: {', '.join(MIX_CHOICES)}")
    if not (mixup or cutmix):
        return None
    if mix_prob is None:
        mix_prob = 0.8 if mixup and not cutmix else 1.0
    if not 0 <= mix_prob <= 1:
        raise UserError(f"the mixing probability must be in [0, 1], got {mix_prob}")
    mixers = []
    if mixup and not (cutmix and choice == "original"):
        mixers.append(MixUp(mixup_alpha))
    if cutmix:
        mixers.append(CutMix(cutmix_beta))
    return BatchMixer(mixers, mix_prob)


# Each builder: keywords -> (PIL transform for the DataLoader-workers path, batched transform for
# the device path). autoaugment.py (and torchvision, for the PIL side) are imported on first use.
POLICIES = Registry("augmentation policy")
POLICY_OPS = ("original", "torchvision")


@POLICIES.register("none")
def _no_policy(**_):
    return None, None


@POLICIES.register("autoaugment")
def _autoaugment(*, dataset_policy="cifar10", ops="original", **_):
    import torchvision.transforms as T

    import autoaugment as aa

    if ops == "original":
        pil = aa.OriginalAutoAugment(dataset_policy)
    else:
        pil = T.AutoAugment(T.AutoAugmentPolicy(dataset_policy))
    return pil, aa.BatchAutoAugment(policy=dataset_policy, ops=ops)


@POLICIES.register("randaugment")
def _randaugment(*, ra_n=2, ra_m=9, **_):
    import torchvision.transforms as T

    import autoaugment as aa

    return T.RandAugment(ra_n, ra_m), aa.BatchRandAugment(ra_n, ra_m)


@POLICIES.register("trivialaugment")
def _trivialaugment(**_):
    import torchvision.transforms as T

    import autoaugment as aa

    return T.TrivialAugmentWide(), aa.BatchTrivialAugmentWide()


@POLICIES.register("timm_randaugment")
def _timm_randaugment(*, ra_n=2, ra_m=9, ra_mstd=0.5, ra_prob=0.5, ra_inc=True, mean=None, **_):
    import timm_augment as ta

    kw = dict(num_ops=ra_n, magnitude=ra_m, magnitude_std=ra_mstd, prob=ra_prob, increasing=ra_inc,
              fill=ta.fill_color(mean))
    try:
        return ta.TimmRandAugment(**kw), ta.BatchTimmRandAugment(**kw)
    except ValueError as e:
        raise UserError(f"timm_randaugment: {e}") from None


@POLICIES.register("k47_randaugment")
def _k47_randaugment(*, ra_n=2, ra_m=14, **_):
    # kentaroy47/vision-transformers-cifar10's own RandAugment (its randomaug.py); it runs before
    # the crop and flip, as in the source (the loaders read `before_crop`).
    import k47_augment

    return k47_augment.K47RandAugment(ra_n, ra_m), k47_augment.BatchK47RandAugment(ra_n, ra_m)


def build_policy(name, *, dataset_policy="cifar10", ops="original", ra_n=2, ra_m=9, ra_mstd=0.5, ra_prob=0.5,
                 ra_inc=True, mean=None):
    """(PIL transform or None, batched transform or None) for the policy `name`, one of
    POLICIES.names(). autoaugment: dataset_policy ("cifar10" | "svhn"), ops ("original" | "torchvision");
    randaugment and k47_randaugment: ra_n, ra_m (0-30); timm_randaugment: ra_n, ra_m (timm's 0-10), ra_mstd (inf:
    uniform), ra_prob, ra_inc and mean (the dataset mean, for timm's img_mean fill; None: grey 128)."""
    if ops not in POLICY_OPS:
        raise UserError(f"unknown policy ops {ops!r}; choose from: {', '.join(POLICY_OPS)}")
    return POLICIES.build(name, dataset_policy=dataset_policy, ops=ops, ra_n=ra_n, ra_m=ra_m, ra_mstd=ra_mstd,
                          ra_prob=ra_prob, ra_inc=ra_inc, mean=mean)
