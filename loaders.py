"""How batches reach the model: the two input paths and the evaluation loader.

  device path (default on CUDA): the training set lives on the device; batches are drawn by
      index and cropped, flipped and policy-augmented there, per image (augment.py,
      autoaugment.py). No worker processes, no host-to-device copies per batch.
  worker path (--input-path workers): a torch DataLoader whose workers run PIL transforms,
      as the original ViT-CIFAR did.

Both then normalise, resize to --image-size and apply the float-stage extras on the device.
Each epoch's draws depend only on (seed, epoch), which is what makes --resume exact.
"""
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image

from augment import random_crop, random_hflip
from data import epoch_seed

class Normalize:
    """uint8 -> float, (x/255 - mean) / std, then resize to the model's image size."""

    def __init__(self, mean, std, image_size, device):
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255
        self.image_size = image_size

    def __call__(self, x):
        x = (x.float() - self.mean) / self.std
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size,) * 2, mode="bilinear",
                              antialias=x.shape[-1] > self.image_size, align_corners=False)
        return x


def repeat_order(order, repeats):
    """Repeated augmentation (Hoffer et al. 2020; DeiT's RASampler): each drawn image appears
    `repeats` times in a row, so one batch holds several augmentations of it; the epoch keeps
    its length, so it sees len/repeats distinct images."""
    if repeats <= 1:
        return order
    return order.repeat_interleave(repeats)[: len(order)]


class DeviceSource:
    """Training batches drawn by index from uint8 tensors on the device, augmented there.

    Every batch has the same shape (static shapes let a compiled step be captured once): the
    last partial batch of each epoch is dropped, so an epoch of CIFAR-10 at batch 128 trains
    on 390 x 128 = 49,920 of the 50,000 images, a different 80 left out each epoch (the epoch's
    `train_images` says so). The permutation and every augmentation draw are made on the
    device, from its RNG, so no batch waits for a host-to-device copy.
    """

    def __init__(self, x, y, batch_size, crop_padding, hflip, policy, device, rank=0, world_size=1, repeats=1,
                 compile_augment=False, crop=None):
        self.x, self.y = x.to(device), y.to(device)
        self.repeats = repeats
        # Eager, the augmentation is a fixed few hundred small kernels a batch; compiled with
        # static shapes, inductor fuses them into a few. If compiling fails, eager it is.
        self._augment = torch.compile(self.augment, fullgraph=True, dynamic=False) if compile_augment else self.augment
        self._compiled = compile_augment
        self.batch_size, self.crop_padding, self.hflip = batch_size, crop_padding, hflip
        self.crop = crop.to(device) if crop is not None else None  # replaces the pad crop (--crop timm_rrc)
        self.policy = policy.to(device) if policy is not None and hasattr(policy, "to") else policy
        self.rank, self.world_size = rank, world_size
        self.per_rank = len(y) // world_size
        self.order_generator = None

    def set_epoch(self, seed, epoch):
        # The permutation comes from its own generator so that every rank draws the same one and
        # takes its own shard; the augmentation draws come from the device's global RNG, which
        # main.py reseeds from (seed, epoch) before every epoch, and per rank here.
        if self.x.device.type != "meta":
            self.order_generator = torch.Generator(device=self.x.device).manual_seed(epoch_seed(seed, epoch, stream=1))
        if self.world_size > 1:
            torch.manual_seed(epoch_seed(seed, epoch, stream=100 + self.rank))

    def __len__(self):
        return max(1, self.per_rank // self.batch_size)

    @property
    def batch_images(self):
        return min(self.batch_size, self.per_rank)

    def __iter__(self):
        order = torch.randperm(len(self.y), generator=self.order_generator, device=self.x.device)
        order = repeat_order(order, self.repeats)[self.rank::self.world_size][: self.per_rank]
        n = self.batch_images
        for start in range(0, len(self) * n, n):
            idx = order[start:start + n]
            yield self._augmented(self.x[idx]), self.y[idx]

    def augment(self, x):
        """Crop, flip and policy of one uint8 batch (the policy first where its source ran it
        before the crop): the same ops whatever was drawn."""
        first = getattr(self.policy, "before_crop", False)
        if first:
            x = self.policy(x)
        x = random_crop(x, self.crop_padding) if self.crop is None else self.crop(x)
        if self.hflip:
            x = random_hflip(x)
        if self.policy is not None and not first:
            x = self.policy(x)
        return x

    def _augmented(self, x):
        if not self._compiled:
            return self._augment(x)
        try:
            return self._augment(x)
        except Exception as e:  # a compiler failure must not cost the run: say so once, go on eager
            import sys
            print(f"warning: compiling the augmentation failed ({type(e).__name__}); running it eagerly",
                  file=sys.stderr)
            self._augment, self._compiled = self.augment, False
            return self._augment(x)


class _UInt8Dataset(torch.utils.data.Dataset):
    """Indexed by (image index, seed): each image's transforms draw from torch's RNG seeded with
    its own seed, so what an image gets depends only on (run seed, epoch, position), not on the
    worker count or on what a persistent worker did in earlier epochs."""

    def __init__(self, x, y, transform):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self):
        return len(self.y)

    def __getitem__(self, item):
        i, seed = item
        torch.manual_seed(seed)
        img = Image.fromarray(self.x[i].permute(1, 2, 0).squeeze(-1).numpy())
        return self.transform(img), self.y[i]


class _SeededSampler(torch.utils.data.Sampler):
    """Yields (index, seed) pairs: an epoch's order, sharded per rank, and one seed per image.
    It runs in the main process, so persistent workers see each epoch's draws."""

    def __init__(self, n, rank, world_size, repeats=1):
        self.n, self.rank, self.world_size, self.repeats = n, rank, world_size, repeats
        self.per_rank = n // world_size if world_size > 1 else n
        self.generator = torch.Generator()

    def __len__(self):
        return self.per_rank

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator)
        order = repeat_order(order, self.repeats)[self.rank::self.world_size][: self.per_rank]
        seeds = torch.randint(0, 2**62, (self.n,), generator=self.generator)[self.rank::self.world_size]
        return iter(zip(order.tolist(), seeds.tolist()))


class WorkerSource:
    """The original pipeline: PIL transforms in DataLoader workers, uint8 batches to the device.

    The workers are started once and kept (persistent_workers), not respawned every epoch.
    Like the original's DataLoader, the last batch of an epoch may be partial.
    """

    def __init__(self, x, y, batch_size, crop_padding, hflip, policy, device, workers, rank=0, world_size=1,
                 repeats=1, crop=None):
        size = x.shape[-1]
        if crop is not None:  # --crop timm_rrc
            tf = [crop]
        else:
            tf = [T.RandomCrop(size, padding=crop_padding)] if crop_padding > 0 else []
        tf += [T.RandomHorizontalFlip()] if hflip else []
        if getattr(policy, "before_crop", False):  # where its source ran it (k47_randaugment)
            tf.insert(0, policy)
        elif policy is not None:
            tf.append(policy)
        tf += [T.PILToTensor()]
        self.dataset = _UInt8Dataset(x, y, T.Compose(tf))
        self.device, self.batch_size = device, batch_size
        self.sampler = _SeededSampler(len(y), rank, world_size, repeats)
        self.loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=batch_size, sampler=self.sampler, num_workers=workers,
            pin_memory=device.type == "cuda", persistent_workers=workers > 0)

    def set_epoch(self, seed, epoch):
        self.sampler.generator.manual_seed(epoch_seed(seed, epoch, stream=1))

    def __len__(self):
        return -(-len(self.sampler) // self.batch_size)

    def __iter__(self):
        for x, y in self.loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


class TrainLoader:
    """A source of uint8 batches, then normalisation, resizing and the float-stage extras."""

    def __init__(self, source, normalize, extras, seed):
        self.source, self.normalize, self.extras, self.seed = source, normalize, extras, seed

    def set_epoch(self, epoch):
        self.source.set_epoch(self.seed, epoch)

    def __len__(self):
        return len(self.source)

    def __iter__(self):
        for x, y in self.source:
            x = self.normalize(x)
            for extra in self.extras:
                x = extra(x)
            yield x, y


class EvalLoader:
    """Slices of a uint8 tensor (kept on the device on the device path), normalised.

    With pad=True (the device path) the images of the last batch are padded to the full batch
    size (its labels are not: evaluate() cuts the padded rows off), so a compiled model sees one
    shape only.
    """

    def __init__(self, x, y, batch_size, normalize, device, on_device, rank=0, world_size=1, pad=False):
        # Shard for distributed evaluation; the metrics are summed across ranks afterwards.
        x, y = x[rank::world_size], y[rank::world_size]
        self.n = len(y)
        if pad and len(y) % batch_size and len(y) > batch_size:
            x = torch.cat([x, x.new_zeros((batch_size - len(y) % batch_size, *x.shape[1:]))])
        self.x, self.y = (x.to(device), y.to(device)) if on_device else (x, y)
        self.batch_size, self.normalize, self.device = batch_size, normalize, device

    def __len__(self):
        return -(-self.n // self.batch_size)

    def __iter__(self):
        for start in range(0, self.n, self.batch_size):
            x = self.x[start:start + self.batch_size].to(self.device, non_blocking=True)
            yield self.normalize(x), self.y[start:start + self.batch_size].to(self.device, non_blocking=True)


def build_loaders(data, device, *, input_path, batch_size, eval_batch_size, input_size, crop_padding, hflip,
                  seed, policies=(None, None), extras=(), workers=0, rank=0, world_size=1, repeats=1,
                  compile_augment=False, crops=(None, None)):
    """(train loader, per-epoch evaluation loader). `policies` is (PIL transform for the workers
    path, batched transform for the device path), as augment.build_policy returns them; `crops`
    likewise, a crop that replaces the pad-`crop_padding` random crop when given."""
    pil_policy, batch_policy = policies
    normalize = Normalize(data.mean, data.std, input_size, device)
    common = dict(batch_size=batch_size, crop_padding=crop_padding, hflip=hflip, device=device, rank=rank,
                  world_size=world_size, repeats=repeats)
    on_device = input_path == "device"
    if on_device:
        source = DeviceSource(data.train_x, data.train_y, policy=batch_policy, compile_augment=compile_augment,
                              crop=crops[1], **common)
    else:
        source = WorkerSource(data.train_x, data.train_y, policy=pil_policy, workers=workers, crop=crops[0], **common)
    train = TrainLoader(source, normalize, list(extras), seed)
    # Per-epoch evaluation uses the held-out part of the training split when there is one.
    held_x, held_y = (data.val_x, data.val_y) if data.val_y is not None else (data.test_x, data.test_y)
    test = EvalLoader(held_x, held_y, eval_batch_size, normalize, device, on_device, rank, world_size, pad=on_device)
    return train, test
