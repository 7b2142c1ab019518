"""Datasets: what the images are (loaders.py is how batches reach the model).

Every dataset is loaded once into memory as uint8 tensors (N, C, H, W) plus int64 labels:
CIFAR-10/100 and SVHN through torchvision (downloaded into --data-dir), or any ImageFolder
tree with --dataset folder. That is small for this job (all of CIFAR-10 is 180 MB) and lets
both input paths of loaders.py share everything after the first augmentation stage.
"""
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import torchvision
from PIL import Image

from utils import Registry, UserError

DATASETS = Registry("dataset")

# Per-channel statistics of the training splits, as ViT-CIFAR uses them.
STATS = {
    "c10": ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]),
    "c100": ([0.5071, 0.4867, 0.4408], [0.2675, 0.2565, 0.2761]),
    "svhn": ([0.4377, 0.4438, 0.4728], [0.1980, 0.2010, 0.1970]),
}


@dataclass
class Data:
    name: str
    train_x: torch.Tensor  # uint8 (N, C, H, W)
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list
    mean: list
    std: list
    val_x: torch.Tensor = None  # held out of the training split by --val-split or --folds
    val_y: torch.Tensor = None

    @property
    def in_chans(self):
        return self.train_x.shape[1]

    @property
    def image_size(self):
        return self.train_x.shape[-1]


def epoch_seed(seed, epoch, stream=0):
    """One independent seed per (run seed, epoch, consumer)."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1)[0])


# ---------------------------------------------------------------- loading

def _torchvision_dataset(cls, root, name, layout, **kw):
    """Use the copy in root if it is there, download it otherwise, one clear error if neither."""
    try:
        return cls(root, download=False, **kw)
    except RuntimeError:
        pass  # not there (or corrupt): try to download
    try:
        return cls(root, download=True, **kw)
    except Exception as e:
        raise UserError(f"{name} is not in --data-dir {root} and could not be downloaded "
                        f"({type(e).__name__}); put it there as {layout}")


@DATASETS.register("c10")
def load_cifar10(root, image_size=None):
    return _load_cifar(torchvision.datasets.CIFAR10, "c10", "CIFAR-10", root, "cifar-10-batches-py/")


@DATASETS.register("c100")
def load_cifar100(root, image_size=None):
    return _load_cifar(torchvision.datasets.CIFAR100, "c100", "CIFAR-100", root, "cifar-100-python/")


def _load_cifar(cls, key, name, root, layout):
    train = _torchvision_dataset(cls, root, name, layout + " (the python version)", train=True)
    test = _torchvision_dataset(cls, root, name, layout + " (the python version)", train=False)

    def arrays(ds):
        return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets)

    return Data(key, *arrays(train), *arrays(test), list(train.classes), *STATS[key])


@DATASETS.register("svhn")
def load_svhn(root, image_size=None):
    layout = "train_32x32.mat and test_32x32.mat"
    train = _torchvision_dataset(torchvision.datasets.SVHN, root, "SVHN", layout, split="train")
    test = _torchvision_dataset(torchvision.datasets.SVHN, root, "SVHN", layout, split="test")

    def arrays(ds):
        return torch.from_numpy(ds.data).contiguous(), torch.from_numpy(ds.labels).long()

    return Data("svhn", *arrays(train), *arrays(test), [str(i) for i in range(10)], *STATS["svhn"])


GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


def _read_images(paths, mode, size):
    def read(path):
        try:
            with Image.open(path) as img:
                img = img.convert(mode)
                if img.size != (size, size):
                    img = img.resize((size, size), Image.BILINEAR)
                arr = np.asarray(img, dtype=np.uint8)
        except Exception as e:
            raise UserError(f"cannot read image {path}: {type(e).__name__}")
        return arr[:, :, None] if arr.ndim == 2 else arr

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        images = list(pool.map(read, paths, chunksize=256))
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def _image_folder(path):
    try:
        return torchvision.datasets.ImageFolder(path)
    except FileNotFoundError as e:
        raise UserError(f"{path}: {str(e).splitlines()[0]}")


@DATASETS.register("folder")
def load_folder(root, image_size=32):
    """Any ImageFolder tree: root/train/<class>/* and root/test/<class>/* (or root/val/).

    Images of any size are resized to image_size x image_size; the set is grayscale (1
    channel) when every image is, RGB otherwise. Statistics come from the training split.
    """
    train_dir = os.path.join(root, "train")
    test_dir = next((os.path.join(root, d) for d in ("test", "val") if os.path.isdir(os.path.join(root, d))), None)
    if not os.path.isdir(train_dir) or test_dir is None:
        raise UserError(f"--dataset folder needs {root}/train/<class>/*.jpg|png and {root}/test/<class>/* "
                        f"(or {root}/val/<class>/*); see README 'Your own data'")
    train, test = _image_folder(train_dir), _image_folder(test_dir)
    unknown = set(test.classes) - set(train.classes)
    if unknown:
        raise UserError(f"{test_dir} has classes not in {train_dir}: {', '.join(sorted(unknown))}")
    paths = [p for p, _ in train.samples] + [p for p, _ in test.samples]
    modes = set()
    for p in paths:
        try:
            with Image.open(p) as img:
                modes.add(img.mode)
        except Exception as e:
            raise UserError(f"cannot read image {p}: {type(e).__name__}")
    mode = "L" if modes <= GRAY_MODES else "RGB"
    train_x = _read_images([p for p, _ in train.samples], mode, image_size)
    test_x = _read_images([p for p, _ in test.samples], mode, image_size)
    test_y = [train.class_to_idx[test.classes[t]] for _, t in test.samples]
    x = train_x.double() / 255
    mean = x.mean(dim=(0, 2, 3)).tolist()
    std = x.std(dim=(0, 2, 3)).clamp(min=1e-3).tolist()
    return Data("folder", train_x, torch.tensor(train.targets), test_x, torch.tensor(test_y),
                list(train.classes), mean, std)


def stratified_folds(labels, k, seed):
    """k disjoint index sets covering every image, each class spread evenly over them."""
    g = torch.Generator().manual_seed(seed)
    folds = [[] for _ in range(k)]
    offset = 0
    for c in labels.unique():
        idx = (labels == c).nonzero().squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=g)]
        for j, i in enumerate(idx.tolist()):
            folds[(j + offset) % k].append(i)
        offset += len(idx)  # so small classes do not all start in fold 0
    return [torch.tensor(sorted(f), dtype=torch.long) for f in folds]


def stratified_holdout(labels, n, seed):
    """Indices of n images to hold out, in proportion to the class sizes."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=g)
    # Sorting a random order by class and taking every (N/n)-th image stratifies the draw.
    by_class = order[torch.sort(labels[order], stable=True).indices]
    picks = torch.linspace(0, len(labels) - 1, n).round().long().unique()
    return by_class[picks].sort().values


def _hold_out(data, held):
    keep = torch.ones(len(data.train_y), dtype=torch.bool)
    keep[held] = False
    data.val_x, data.val_y = data.train_x[held], data.train_y[held]
    data.train_x, data.train_y = data.train_x[keep], data.train_y[keep]


def load_data(args):
    data = DATASETS.build(args.dataset, args.data_dir, image_size=args.image_size)
    if len(data.train_y) == 0 or len(data.test_y) == 0:
        raise UserError(f"dataset {args.dataset} in {args.data_dir} has an empty train or test split")
    if args.train_subset:
        if args.train_subset > len(data.train_y):
            raise UserError(f"--train-subset {args.train_subset} is larger than the training set ({len(data.train_y)})")
        g = torch.Generator().manual_seed(args.seed)
        keep = torch.randperm(len(data.train_y), generator=g)[: args.train_subset].sort().values
        data.train_x, data.train_y = data.train_x[keep], data.train_y[keep]
    if args.val_split:
        if args.val_split >= len(data.train_y):
            raise UserError(f"--val-split {args.val_split} leaves no training images (the split has {len(data.train_y)})")
        _hold_out(data, stratified_holdout(data.train_y, args.val_split, args.seed))
    elif args.fold is not None:
        k, i = args.fold
        if k > len(data.train_y):
            raise UserError(f"--folds {k} is more than the {len(data.train_y)} training images")
        _hold_out(data, stratified_folds(data.train_y, k, args.seed)[i])
    return data
