"""Datasets: what the images are (loaders.py is how batches reach the model).

Every dataset is loaded once into memory as uint8 tensors (N, C, H, W) plus int64 labels:
CIFAR-10/100 and SVHN through torchvision (downloaded into --data-dir), or any ImageFolder
tree with --dataset folder. That is small for this job (all of CIFAR-10 is 180 MB) and lets
both input paths of loaders.py share everything after the first augmentation stage.

    data = load_dataset("folder", "my_data", image_size=32, train_subset=5000, seed=42)
    saved = fingerprint(data, "my_data", "folder")     # stored with a run, compared on --resume
    check_fingerprint(saved, fingerprint(...))         # one-line UserError if the data changed

Reading image files and scanning folder trees live in images.py (the one image reader, used by
training and predict.py alike).
"""
import hashlib
import os
from dataclasses import dataclass

import numpy as np
import torch
import torchvision

from images import channels_of, files_source, read_image, read_images, scan_split, split_dirs, warn
from utils import Registry, UserError

__all__ = ["read_image", "scan_split"]  # the image reader lives in images.py; predict.py and the tests import it here too

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
    test_split: str = "test"  # where the test images came from: "test", or "val" for a folder tree with val/ only
    # What fingerprint() reports of the whole training split, taken before --train-subset draws
    # from it (a subset's images alone cannot tell whether the set they were drawn from changed).
    source: dict = None

    @property
    def in_chans(self):
        return self.train_x.shape[1]

    @property
    def image_size(self):
        return self.train_x.shape[-1]


def epoch_seed(seed, epoch, stream=0):
    """One independent seed per (run seed, epoch, consumer)."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1)[0])


def subset_indices(n, subset, seed):
    """The sorted indices of --train-subset's draw from n training images (seeded)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:subset].sort().values


# ---------------------------------------------------------------- torchvision datasets

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


def _tensor_source(train_x, train_y, test_x, test_y, samples=256):
    """Fingerprint source of an in-memory set: every label and a cheap, fixed sample of images."""
    h = hashlib.sha256()
    for x, y in ((train_x, train_y), (test_x, test_y)):
        h.update(y.numpy().astype("<i8").tobytes())
        if len(x):
            picks = torch.linspace(0, len(x) - 1, min(samples, len(x))).round().long().unique()
            h.update(x[picks].contiguous().numpy().tobytes())
    return {"train_images": len(train_y), "content_sha256": h.hexdigest()}


def _in_memory(key, train, test, classes, select):
    """Data from (x, y) pairs, with --train-subset applied after the fingerprint source is taken."""
    (train_x, train_y), (test_x, test_y) = train, test
    source = _tensor_source(train_x, train_y, test_x, test_y)
    keep = select(len(train_y)) if select is not None else None
    if keep is not None:
        train_x, train_y = train_x[keep], train_y[keep]
    return Data(key, train_x, train_y, test_x, test_y, classes, *STATS[key], source=source)


@DATASETS.register("c10")
def load_cifar10(root, image_size=None, select=None):
    return _load_cifar(torchvision.datasets.CIFAR10, "c10", "CIFAR-10", root, "cifar-10-batches-py/", select)


@DATASETS.register("c100")
def load_cifar100(root, image_size=None, select=None):
    return _load_cifar(torchvision.datasets.CIFAR100, "c100", "CIFAR-100", root, "cifar-100-python/", select)


def _load_cifar(cls, key, name, root, layout, select=None):
    train = _torchvision_dataset(cls, root, name, layout + " (the python version)", train=True)
    test = _torchvision_dataset(cls, root, name, layout + " (the python version)", train=False)

    def arrays(ds):
        return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets)

    return _in_memory(key, arrays(train), arrays(test), list(train.classes), select)


@DATASETS.register("svhn")
def load_svhn(root, image_size=None, select=None):
    layout = "train_32x32.mat and test_32x32.mat"
    train = _torchvision_dataset(torchvision.datasets.SVHN, root, "SVHN", layout, split="train")
    test = _torchvision_dataset(torchvision.datasets.SVHN, root, "SVHN", layout, split="test")

    def arrays(ds):
        return torch.from_numpy(ds.data).contiguous(), torch.from_numpy(ds.labels).long()

    return _in_memory("svhn", arrays(train), arrays(test), [str(i) for i in range(10)], select)


@DATASETS.register("folder")
def load_folder(root, image_size=32, select=None, subset_stats=True):
    """Any ImageFolder tree: root/train/<class>/* and root/test/<class>/* (or root/val/).

    Images of any size are resized to image_size x image_size; the set is grayscale (1
    channel) when every image is, RGB otherwise. Statistics come from the training images
    loaded. `select(n)` (see load_dataset) picks, before anything is decoded, the indices of
    the training files to load, or returns None for all of them; with subset_stats=False the
    statistics still come from every training image (decoding them all, as before).
    """
    train_dir, test_dir, test_split = split_dirs(root)
    classes, train = scan_split(train_dir)
    test_classes, test = scan_split(test_dir)
    unknown = set(test_classes) - set(classes)
    if unknown:
        raise UserError(f"{test_dir} has classes not in {train_dir}: {', '.join(sorted(unknown))}")
    index = {c: i for i, c in enumerate(classes)}
    test = [(p, index[test_classes[t]]) for p, t in test]  # the train split's label indices
    mode = channels_of([p for p, _ in train + test])
    keep = select(len(train)) if select is not None else None
    if keep is None or not subset_stats:
        train_x = read_images([p for p, _ in train], mode, image_size)
        train_y = torch.tensor([t for _, t in train], dtype=torch.long)
    else:
        kept = [train[i] for i in keep.tolist()]
        train_x = read_images([p for p, _ in kept], mode, image_size)
        train_y = torch.tensor([t for _, t in kept], dtype=torch.long)
    x = train_x.double() / 255
    mean = x.mean(dim=(0, 2, 3)).tolist()
    std = x.std(dim=(0, 2, 3)).clamp(min=1e-3).tolist()
    if keep is not None and not subset_stats:
        train_x, train_y = train_x[keep], train_y[keep]
    test_x = read_images([p for p, _ in test], mode, image_size)
    return Data("folder", train_x, train_y, test_x, torch.tensor([t for _, t in test], dtype=torch.long),
                list(classes), mean, std, test_split=test_split, source=files_source(root, train, test, classes))


# ---------------------------------------------------------------- held-out splits

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


# ---------------------------------------------------------------- the entry points

def load_dataset(dataset, data_dir, *, image_size=32, train_subset=0, val_split=0, fold=None, seed=42,
                 subset_stats=True):
    """The dataset with --train-subset, --val-split or one fold (k, i) of --folds applied.

    --train-subset draws its indices (subset_indices) over the training file list before any
    image is decoded, so a subset of a folder tree costs only its own images: the same images
    and labels as drawing after decoding everything. A folder set's mean and std then come from
    the subset; subset_stats=False decodes the whole training split for them instead.
    """
    def select(n):
        if not train_subset or n == 0:  # an empty split gets its own error below
            return None
        if train_subset > n:
            raise UserError(f"--train-subset {train_subset} is larger than the training set ({n})")
        return subset_indices(n, train_subset, seed)

    kwargs = {"subset_stats": subset_stats} if dataset == "folder" else {}
    data = DATASETS.build(dataset, data_dir, image_size=image_size, select=select, **kwargs)
    if len(data.train_y) == 0 or len(data.test_y) == 0:
        raise UserError(f"dataset {dataset} in {data_dir} has an empty train or test split")
    if val_split:
        if val_split >= len(data.train_y):
            raise UserError(f"--val-split {val_split} leaves no training images (the split has {len(data.train_y)})")
        _hold_out(data, stratified_holdout(data.train_y, val_split, seed))
    elif fold is not None:
        k, i = fold
        if k > len(data.train_y):
            raise UserError(f"--folds {k} is more than the {len(data.train_y)} training images")
        _hold_out(data, stratified_folds(data.train_y, k, seed)[i])
    labels = data.train_y.unique().tolist()
    if len(labels) == 1:
        name = data.classes[labels[0]] if labels[0] < len(data.classes) else str(labels[0])
        warn(f"every training image is of class '{name}'; a classifier needs at least two classes to learn anything")
    return data


# ---------------------------------------------------------------- fingerprints

# What a model depends on, whatever images it is shown: the keys to compare for --eval-only on
# other data of the same classes.
MODEL_KEYS = ("num_classes", "classes", "channels")
_NOT_COMPARED = {"data_dir"}  # --data-dir may move between a run and its --resume


def fingerprint(data, data_dir, dataset):
    """A small dict of plain values that tells whether two runs saw the same data.

    Counts, class names, channels and image size, plus a SHA-256 of the whole training and
    test file list with each file's class (folder trees; paths relative to --data-dir, so the
    tree may move) or of every label and a fixed sample of pixels (torchvision sets). The
    training side describes the split before --train-subset / --val-split draw from it.
    """
    source = data.source or _tensor_source(data.train_x, data.train_y, data.test_x, data.test_y)
    held = 0 if data.val_y is None else len(data.val_y)
    return {
        "dataset": dataset,
        "data_dir": os.path.abspath(data_dir),
        "num_classes": len(data.classes),
        "classes": list(data.classes),
        "channels": int(data.in_chans),
        "image_size": int(data.image_size),
        "train_images": int(source.get("train_images", len(data.train_y) + held)),
        "test_images": int(len(data.test_y)),
        "test_split": data.test_split,
        "content_sha256": source["content_sha256"],
    }


def _difference(key, a, b):
    if key == "dataset":
        return f"dataset {a} there, {b} here"
    if key == "num_classes":
        return f"{a} classes there, {b} here"
    if key == "classes":
        i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
        return None if i is None else f"class {i} is {a[i]!r} there, {b[i]!r} here"
    if key == "channels":
        return f"{a} channels there, {b} here"
    if key == "image_size":
        return f"{a}x{a} images there, {b}x{b} here"
    if key == "train_images":
        return f"{a} training images there, {b} here"
    if key == "test_images":
        return f"{a} test images there, {b} here"
    if key == "test_split":
        return f"tested on {a}/ there, {b}/ here"
    if key == "content_sha256":
        return "the same counts and classes, but other files, labels or pixels"
    return f"{key} {a} there, {b} here"


def check_fingerprint(saved, current, context="--resume", keys=None):
    """One-line UserError naming what differs between two fingerprints ("--resume: the data
    differ from the run's: 10 classes there, 11 here"). `keys` limits the comparison (e.g.
    MODEL_KEYS); a missing `saved` (a run from before fingerprints) is not checked."""
    if not saved:
        return
    found = []
    for key in keys or current:
        if key in _NOT_COMPARED or key not in saved or key not in current or saved[key] == current[key]:
            continue
        text = _difference(key, saved[key], current[key])
        if text:
            found.append(text)
    if len(found) > 1 and found[-1].startswith("the same counts"):
        found.pop()  # the hash differs because of what is already named
    if found:
        raise UserError(f"{context}: the data differ from the run's: {'; '.join(found)}")
