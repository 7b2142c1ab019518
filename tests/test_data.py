"""data.py: folder datasets on generated images, torchvision datasets on generated files, and
the two input paths."""
import os
import pickle

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import build
import main as cli
from conftest import make_image_folder
from build import load_data
from data import load_folder
from loaders import DeviceSource, build_loaders
from utils import UserError


def args_for(*argv):
    args = cli.get_args_parser().parse_args(list(argv))
    build.resolve_args(args)
    return args


def loaders_for(args, data):
    """(train, eval) loaders built from the flags as main.build_training builds them."""
    from augment import build_policy
    from extras import build_extras
    policies = build_policy(args.policy, dataset_policy=args.aa_policy, ops=args.aa_ops, ra_n=args.ra_n, ra_m=args.ra_m)
    return build_loaders(data, torch.device("cpu"), input_path=args.input_path, batch_size=args.batch_size,
                         crops=build.make_crops(args, data),
                         eval_batch_size=args.eval_batch_size, input_size=args.input_size,
                         crop_padding=args.crop_padding, hflip=args.hflip, seed=args.seed, policies=policies,
                         extras=build_extras(rcpaste=args.rcpaste, cutout=args.cutout,
                                             random_erasing=args.random_erasing), workers=args.workers)


def test_folder_rgb(tmp_path):
    root = make_image_folder(str(tmp_path), n_train=5, n_test=3)
    data = load_folder(root, image_size=32)
    assert data.train_x.shape == (20, 3, 32, 32) and data.train_x.dtype == torch.uint8
    assert data.test_x.shape == (12, 3, 32, 32)
    assert data.classes == ["class0", "class1", "class2", "class3"]
    assert sorted(set(data.train_y.tolist())) == [0, 1, 2, 3]
    # Statistics come from the training split.
    x = data.train_x.double() / 255
    assert np.allclose(data.mean, x.mean(dim=(0, 2, 3)).numpy())


def test_folder_grayscale_and_odd_sizes(tmp_path):
    root = make_image_folder(str(tmp_path), n_train=3, n_test=2, size=27, mode="L")
    data = load_folder(root, image_size=16)
    assert data.train_x.shape == (12, 1, 16, 16) and len(data.mean) == 1


def test_folder_mixed_modes_and_sizes_become_rgb(tmp_path):
    root = make_image_folder(str(tmp_path), n_train=2, n_test=1, size=40, mode="L")
    Image.fromarray(np.zeros((13, 70, 3), np.uint8)).save(os.path.join(root, "train", "class0", "wide.png"))
    Image.fromarray(np.zeros((50, 50, 4), np.uint8), "RGBA").save(os.path.join(root, "test", "class1", "alpha.png"))
    data = load_folder(root, image_size=32)
    assert data.train_x.shape == (9, 3, 32, 32) and data.test_x.shape == (5, 3, 32, 32)


def test_folder_val_split_name_and_test_label_mapping(tmp_path):
    root = make_image_folder(str(tmp_path), n_train=2, n_test=2, splits=("train", "val"))
    # The val split lacks class1: its labels must still use the train split's indices.
    import shutil
    shutil.rmtree(os.path.join(root, "val", "class1"))
    data = load_folder(root, image_size=32)
    assert sorted(set(data.test_y.tolist())) == [0, 2, 3]


@pytest.mark.parametrize("break_it,message", [
    (lambda root: os.rename(os.path.join(root, "test"), os.path.join(root, "elsewhere")), "needs"),
    (lambda root: open(os.path.join(root, "train", "class0", "0.png"), "wb").write(b"not a png"), "cannot read image"),
    (lambda root: os.makedirs(os.path.join(root, "test", "unseen")) or Image.new("RGB", (4, 4)).save(
        os.path.join(root, "test", "unseen", "a.png")), "classes not in"),
])
def test_folder_errors(tmp_path, break_it, message):
    root = make_image_folder(str(tmp_path), n_train=2, n_test=1)
    break_it(root)
    with pytest.raises(UserError, match=message):
        load_folder(root, image_size=32)


def test_empty_folder(tmp_path):
    os.makedirs(tmp_path / "train" / "a")
    os.makedirs(tmp_path / "test" / "a")
    with pytest.raises(UserError):
        load_folder(str(tmp_path), image_size=32)


def write_fake_cifar10(root, n=20):
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": rng.integers(0, 10, n).tolist()}
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(batch, f)
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    return batch


def test_cifar10_reads_torchvisions_layout(tmp_path, monkeypatch):
    # Generated files lack the real md5 sums; skip only that check, keep torchvision's reader.
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    last = write_fake_cifar10(str(tmp_path))
    data = load_data(args_for("--dataset", "c10", "--data-dir", str(tmp_path)))
    assert data.train_x.shape == (100, 3, 32, 32) and data.test_x.shape == (20, 3, 32, 32)
    assert torch.equal(data.test_x[3], torch.from_numpy(last["data"][3].reshape(3, 32, 32)))
    assert data.test_y.tolist() == last["labels"]
    assert data.classes[0] == "c0" and data.mean[0] == pytest.approx(0.4914)


def test_svhn_reads_torchvisions_layout(tmp_path, monkeypatch):
    import scipy.io
    monkeypatch.setattr(torchvision.datasets.svhn, "check_integrity", lambda *a, **k: True)
    rng = np.random.default_rng(0)
    for split, n in [("train", 12), ("test", 6)]:
        X = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = rng.integers(1, 11, (n, 1))  # SVHN stores digit 0 as label 10
        scipy.io.savemat(os.path.join(tmp_path, f"{split}_32x32.mat"), {"X": X, "y": y})
    data = load_data(args_for("--dataset", "svhn", "--data-dir", str(tmp_path)))
    assert data.train_x.shape == (12, 3, 32, 32) and int(data.train_y.max()) <= 9
    assert args_for("--dataset", "svhn").hflip is False  # no flips for digits


def test_missing_dataset_names_the_data_dir(tmp_path, monkeypatch):
    def no_network(*a, **k):
        raise OSError("network unreachable")
    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", no_network)
    with pytest.raises(UserError, match=str(tmp_path)):
        load_data(args_for("--dataset", "c100", "--data-dir", str(tmp_path)))


def test_train_subset_is_seeded(tmp_path):
    root = make_image_folder(str(tmp_path), n_train=10, n_test=1)
    a = load_data(args_for("--dataset", "folder", "--data-dir", root, "--train-subset", "7", "--seed", "1"))
    b = load_data(args_for("--dataset", "folder", "--data-dir", root, "--train-subset", "7", "--seed", "1"))
    c = load_data(args_for("--dataset", "folder", "--data-dir", root, "--train-subset", "7", "--seed", "2"))
    assert len(a.train_y) == 7 and torch.equal(a.train_x, b.train_x) and not torch.equal(a.train_x, c.train_x)
    with pytest.raises(UserError, match="larger"):
        load_data(args_for("--dataset", "folder", "--data-dir", root, "--train-subset", "1000"))


@pytest.mark.slow
@pytest.mark.parametrize("policy", [[], ["--autoaugment"], ["--randaugment"], ["--trivialaugment"],
                                    ["--crop", "timm_rrc", "--rrc-scale", "0.3", "1"],
                                    ["--policy", "k47_randaugment", "--ra-m", "14"]])
def test_both_input_paths_agree_in_distribution(tmp_path, policy):
    """Same augmentations on both paths: batch statistics over an epoch agree closely."""
    root = make_image_folder(str(tmp_path), n_train=64, n_test=4)
    stats = {}
    for path in ("device", "workers"):
        args = args_for("--dataset", "folder", "--data-dir", root, "--input-path", path, "--workers", "0",
                        "--batch-size", "64", *policy)
        data = load_data(args)
        train, test = loaders_for(args, data)
        xs = []
        for epoch in range(3):
            train.set_epoch(epoch)
            for x, y in train:
                assert x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32) and y.dtype == torch.int64
                xs.append(x)
        x = torch.cat(xs)
        stats[path] = (x.mean().item(), x.std().item(), (x == x.min()).float().mean().item())
    (m1, s1, z1), (m2, s2, z2) = stats["device"], stats["workers"]
    assert abs(m1 - m2) < 0.08 and abs(s1 - s2) < 0.08 and abs(z1 - z2) < 0.03


def test_device_source_is_reproducible_and_draws_full_batches():
    x = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 4, 4).contiguous()
    y = torch.arange(10)
    src = DeviceSource(x, y, batch_size=4, crop_padding=0, hflip=False, policy=None, device=torch.device("cpu"))
    src.set_epoch(seed=1, epoch=0)
    first = torch.cat([b for _, b in src])
    src.set_epoch(seed=1, epoch=0)
    again = torch.cat([b for _, b in src])
    src.set_epoch(seed=1, epoch=1)
    other = torch.cat([b for _, b in src])
    # Static batch shapes: 2 full batches of 4, the last partial one dropped; no image twice.
    assert len(first) == 8 and len(set(first.tolist())) == 8 and set(first.tolist()) <= set(range(10))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_image_size_resizes_on_both_paths(tmp_path):
    root = make_image_folder(str(tmp_path), n_train=4, n_test=2)
    for path in ("device", "workers"):
        args = args_for("--dataset", "folder", "--data-dir", root, "--image-size", "32", "--input-path", path,
                        "--workers", "0", "--batch-size", "4")
        data = load_data(args)
        args.input_size = 48  # stored at 32, the model takes 48 (e.g. a backbone trained at another size)
        train, test = loaders_for(args, data)
        train.set_epoch(0)
        assert next(iter(train))[0].shape == (4, 3, 48, 48)
        assert next(iter(test))[0].shape == (8, 3, 48, 48)


@pytest.mark.parametrize("before_crop", [False, True])
def test_a_policy_marked_before_crop_runs_before_the_crop_on_both_paths(before_crop):
    """k47_randaugment ran first in its source (before the pad-4 crop): a policy that whitens the
    image then leaves the crop's black padding visible; run after the crop, it covers it."""
    from PIL import Image

    from loaders import DeviceSource, WorkerSource

    class Whiten:  # both paths' forms in one object
        def __init__(self):
            self.before_crop = before_crop

        def __call__(self, x):
            if isinstance(x, Image.Image):
                return Image.new(x.mode, x.size, (255,) * len(x.getbands()))
            return torch.full_like(x, 255)

    x, y = torch.full((16, 3, 8, 8), 128, dtype=torch.uint8), torch.arange(16)
    common = dict(batch_size=16, crop_padding=4, hflip=False, policy=Whiten(), device=torch.device("cpu"))
    for source in (DeviceSource(x, y, **common), WorkerSource(x, y, workers=0, **common)):
        source.set_epoch(0, 0)
        batch = next(iter(source))[0]
        black = (batch == 0).flatten(1).any(1).float().mean()
        assert (black > 0.5) if before_crop else (black == 0), (type(source).__name__, black)
