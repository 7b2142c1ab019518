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

from augment import build_extras, build_policy, random_crop, random_hflip
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


class DeviceSource:
    """Training batches drawn by index from uint8 tensors on the device, augmented there."""

    def __init__(self, x, y, batch_size, crop_padding, hflip, policy, device, rank=0, world_size=1):
        self.x, self.y = x.to(device), y.to(device)
        self.batch_size, self.crop_padding, self.hflip, self.policy = batch_size, crop_padding, hflip, policy
        self.rank, self.world_size = rank, world_size
        self.generator = torch.Generator()
        self.per_rank = len(y) // world_size

    def set_epoch(self, seed, epoch):
        self.generator.manual_seed(epoch_seed(seed, epoch, stream=1))

    def __len__(self):
        return -(-self.per_rank // self.batch_size)

    def __iter__(self):
        g = self.generator
        # Every rank draws the same permutation and takes its own interleaved shard of it.
        order = torch.randperm(len(self.y), generator=g)[self.rank::self.world_size][: self.per_rank]
        order = order.to(self.x.device)
        for start in range(0, self.per_rank, self.batch_size):
            idx = order[start:start + self.batch_size]
            x = random_crop(self.x[idx], self.crop_padding, g)
            if self.hflip:
                x = random_hflip(x, g)
            if self.policy is not None:
                x = self.policy(x, g)
            yield x, self.y[idx]


class _UInt8Dataset(torch.utils.data.Dataset):
    def __init__(self, x, y, transform):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        img = Image.fromarray(self.x[i].permute(1, 2, 0).squeeze(-1).numpy())
        return self.transform(img), self.y[i]


class WorkerSource:
    """The original pipeline: PIL transforms in DataLoader workers, uint8 batches to the device."""

    def __init__(self, x, y, batch_size, crop_padding, hflip, policy, device, workers, rank=0, world_size=1):
        size = x.shape[-1]
        tf = [T.RandomCrop(size, padding=crop_padding)] if crop_padding > 0 else []
        tf += [T.RandomHorizontalFlip()] if hflip else []
        tf += [policy] if policy is not None else []
        tf += [T.PILToTensor()]
        self.dataset = _UInt8Dataset(x, y, T.Compose(tf))
        self.device, self.batch_size, self.workers = device, batch_size, workers
        self.generator = torch.Generator()
        self.sampler = (torch.utils.data.DistributedSampler(self.dataset, world_size, rank, shuffle=True)
                        if world_size > 1 else None)

    def set_epoch(self, seed, epoch):
        # The sampler's order and every worker's seed derive from this generator.
        self.generator.manual_seed(epoch_seed(seed, epoch, stream=1))
        if self.sampler is not None:
            self.sampler.seed = seed
            self.sampler.set_epoch(epoch)

    def __len__(self):
        n = len(self.sampler) if self.sampler is not None else len(self.dataset)
        return -(-n // self.batch_size)

    def __iter__(self):
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=self.batch_size, shuffle=self.sampler is None, sampler=self.sampler,
            num_workers=self.workers, generator=self.generator, pin_memory=self.device.type == "cuda",
            persistent_workers=False)
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


class TrainLoader:
    """A source of uint8 batches, then normalisation, resizing and the float-stage extras."""

    def __init__(self, source, normalize, extras, seed):
        self.source, self.normalize, self.extras, self.seed = source, normalize, extras, seed
        self.generator = torch.Generator()

    def set_epoch(self, epoch):
        self.source.set_epoch(self.seed, epoch)
        self.generator.manual_seed(epoch_seed(self.seed, epoch, stream=2))

    def __len__(self):
        return len(self.source)

    def __iter__(self):
        for x, y in self.source:
            x = self.normalize(x)
            for extra in self.extras:
                x = extra(x, self.generator)
            yield x, y


class EvalLoader:
    """Slices of a uint8 tensor (kept on the device on the device path), normalised."""

    def __init__(self, x, y, batch_size, normalize, device, on_device, rank=0, world_size=1):
        # Shard for distributed evaluation; the metrics are summed across ranks afterwards.
        x, y = x[rank::world_size], y[rank::world_size]
        self.x, self.y = (x.to(device), y.to(device)) if on_device else (x, y)
        self.batch_size, self.normalize, self.device = batch_size, normalize, device

    def __len__(self):
        return -(-len(self.y) // self.batch_size)

    def __iter__(self):
        for start in range(0, len(self.y), self.batch_size):
            x = self.x[start:start + self.batch_size].to(self.device, non_blocking=True)
            yield self.normalize(x), self.y[start:start + self.batch_size].to(self.device, non_blocking=True)


def build_loaders(args, data, device, rank=0, world_size=1):
    """(train loader, per-epoch evaluation loader) for the input path args.input_path."""
    pil_policy, batch_policy = build_policy(args)
    normalize = Normalize(data.mean, data.std, args.input_size, device)
    common = dict(batch_size=args.batch_size, crop_padding=args.crop_padding, hflip=args.hflip,
                  device=device, rank=rank, world_size=world_size)
    on_device = args.input_path == "device"
    if on_device:
        source = DeviceSource(data.train_x, data.train_y, policy=batch_policy, **common)
    else:
        source = WorkerSource(data.train_x, data.train_y, policy=pil_policy, workers=args.workers, **common)
    train = TrainLoader(source, normalize, build_extras(args), args.seed)
    # Per-epoch evaluation uses the held-out part of the training split when there is one.
    held_x, held_y = (data.val_x, data.val_y) if data.val_y is not None else (data.test_x, data.test_y)
    test = EvalLoader(held_x, held_y, args.eval_batch_size, normalize, device, on_device, rank, world_size)
    return train, test
