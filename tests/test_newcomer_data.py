"""The findings of a new user's audit about the data, one test (or a few) each: 16-bit images, one
image reader for training and predict.py, symbolic links in class folders, the data fingerprint,
subset decoding, and which split is evaluated. (Findings 7-12, the tools and checkpoints, are in
test_newcomer_tools.py.)"""
import os
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import data as datamod
import main as cli
from conftest import make_image_folder
from data import check_fingerprint, fingerprint, load_dataset, load_folder, read_image
from utils import UserError, load_checkpoint


def png16(path, arr):
    """A PNG with 16 bits per sample, written chunk by chunk (Pillow writes 16-bit grey, but
    not 16-bit-per-channel RGB): grey for (H, W), RGB for (H, W, 3)."""
    h, w = arr.shape[:2]
    colour_type = 0 if arr.ndim == 2 else 2
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in arr)  # filter 0 on each row

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


# ---------------------------------------------------------------- 1. 16-bit images

def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    values = np.linspace(0, 65535, 32 * 32).round().astype(np.uint16).reshape(32, 32)
    Image.fromarray(values).save(tmp_path / "grey16.png")  # Pillow writes mode I;16 as a 16-bit PNG
    assert Image.open(tmp_path / "grey16.png").mode == "I;16"
    got = read_image(str(tmp_path / "grey16.png"), "L", 32)
    assert got.shape == (32, 32, 1) and got.dtype == np.uint8
    # The high byte (value >> 8): 0 -> 0, 65535 -> 255, and a gradient stays a gradient.
    assert np.array_equal(got[:, :, 0], (values >> 8).astype(np.uint8))
    assert (got == 255).mean() < 0.01  # clipping made nearly every pixel white
    rgb = read_image(str(tmp_path / "grey16.png"), "RGB", 32)  # in a set with colour images
    assert np.array_equal(rgb, np.repeat(got, 3, axis=2))


def test_48_bit_rgb_uses_the_same_scale(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.integers(0, 65536, (16, 16, 3)).astype(np.uint16)
    path = png16(str(tmp_path / "rgb48.png"), values)
    assert np.array_equal(read_image(path, "RGB", 16), (values >> 8).astype(np.uint8))


def test_16_bit_folder_set_is_grey_and_scaled(tmp_path):
    for split in ("train", "test"):
        for c in ("a", "b"):
            os.makedirs(tmp_path / split / c)
            Image.fromarray(np.full((8, 8), 40000 if c == "a" else 1000, np.uint16)).save(tmp_path / split / c / "0.png")
    data = load_folder(str(tmp_path), image_size=8)
    assert data.in_chans == 1
    assert data.train_x[0].unique().tolist() == [40000 >> 8] and data.train_x[1].unique().tolist() == [1000 >> 8]


def test_8_bit_images_read_as_before(tmp_path):
    rng = np.random.default_rng(1)
    for mode in ("L", "RGB", "RGBA", "P"):
        img = Image.fromarray(rng.integers(0, 256, (20, 27, 3)).astype(np.uint8)).convert(mode)
        img.save(tmp_path / f"{mode}.png")
        for target in ("L", "RGB"):
            with Image.open(tmp_path / f"{mode}.png") as f:  # what data.py did before 16-bit support
                before = np.asarray(f.convert(target).resize((16, 16), Image.BILINEAR), dtype=np.uint8)
            got = read_image(str(tmp_path / f"{mode}.png"), target, 16)
            assert np.array_equal(got.reshape(before.shape), before)


# ---------------------------------------------------------------- 2. one reader for predict.py

def test_predict_reads_images_as_training_does(tmp_path):
    import predict

    values = np.linspace(0, 65535, 24 * 24).astype(np.uint16).reshape(24, 24)
    Image.fromarray(values).save(tmp_path / "grey16.png")
    for chans, mode in ((1, "L"), (3, "RGB")):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "The given NumPy array is not writable" on grey images
            x = predict.read_image(str(tmp_path / "grey16.png"), chans, 32)
        expected = torch.from_numpy(read_image(str(tmp_path / "grey16.png"), mode, 32)).permute(2, 0, 1)
        assert x.shape == (chans, 32, 32) and torch.equal(x, expected)


# ---------------------------------------------------------------- 3. symbolic links

def test_link_loop_in_a_class_folder_is_refused(tmp_path):
    root = make_image_folder(str(tmp_path / "d"), n_train=3, n_test=1, classes=2)
    link = os.path.join(root, "train", "class0", "loop")
    os.symlink("..", link)
    with pytest.raises(UserError) as e:
        load_folder(root, image_size=32)
    assert link in str(e.value) and "loop" in str(e.value) and "\n" not in str(e.value)


def test_link_leaving_the_class_folder_is_refused(tmp_path):
    root = make_image_folder(str(tmp_path / "d"), n_train=3, n_test=1, classes=2)
    link = os.path.join(root, "train", "class0", "more")
    os.symlink(os.path.join(root, "train", "class1"), link)  # class1's images labelled class0
    with pytest.raises(UserError, match="outside its class folder") as e:
        load_folder(root, image_size=32)
    assert link in str(e.value)


@pytest.mark.parametrize("target, message", [("class0", "two labels"), ("class0/sub", "two labels"),
                                             (".", "whole split"), ("..", "whole split")])
def test_class_folder_linked_to_another_or_up_is_refused(tmp_path, target, message):
    root = make_image_folder(str(tmp_path / "d"), n_train=3, n_test=1, classes=2)
    os.makedirs(os.path.join(root, "train", "class0", "sub"))
    os.symlink(target, os.path.join(root, "train", "class9"))
    with pytest.raises(UserError, match=message):
        load_folder(root, image_size=32)


def test_harmless_links_are_kept_or_skipped(tmp_path, capsys):
    root = make_image_folder(str(tmp_path / "d"), n_train=3, n_test=1, classes=2)
    elsewhere = tmp_path / "elsewhere.png"
    Image.new("RGB", (32, 32), (255, 0, 0)).save(elsewhere)
    os.symlink(elsewhere, os.path.join(root, "train", "class0", "linked.png"))  # a file link: one more image
    os.makedirs(os.path.join(root, "train", "class1", "sub"))
    os.symlink("sub", os.path.join(root, "train", "class1", "again"))  # inside: its images are already counted
    data = load_folder(root, image_size=32)
    assert data.train_y.tolist() == [0, 0, 0, 0, 1, 1, 1]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "again" in err[0] and err[0].startswith("warning: skipping")


def test_scan_order_matches_torchvision(tmp_path):
    import torchvision
    root = make_image_folder(str(tmp_path / "d"), n_train=12, n_test=1, classes=3)
    os.makedirs(os.path.join(root, "train", "class1", "b", "a"))
    Image.new("RGB", (4, 4)).save(os.path.join(root, "train", "class1", "b", "a", "x.JPG"))
    Image.new("RGB", (4, 4)).save(os.path.join(root, "train", "class1", "b", "y.png"))
    (tmp_path / "d" / "train" / "class2" / "notes.txt").write_text("not an image")
    reference = torchvision.datasets.ImageFolder(os.path.join(root, "train"))
    classes, samples = datamod.scan_split(os.path.join(root, "train"))
    assert classes == reference.classes and samples == reference.samples


# ---------------------------------------------------------------- 4. fingerprint

def test_fingerprint_of_a_folder(tmp_path):
    import shutil
    root = make_image_folder(str(tmp_path / "d"), n_train=3, n_test=2, classes=3)
    saved = fingerprint(load_folder(root, 32), root, "folder")
    assert saved["num_classes"] == 3 and saved["channels"] == 3 and saved["image_size"] == 32
    assert saved["train_images"] == 9 and saved["test_images"] == 6 and saved["test_split"] == "test"
    torch.save({"fingerprint": saved}, tmp_path / "ckpt.pt")  # storable in a checkpoint, loadable safely
    assert load_checkpoint(str(tmp_path / "ckpt.pt"))["fingerprint"] == saved

    moved = str(tmp_path / "moved")
    shutil.copytree(root, moved)  # --data-dir may change on --resume
    check_fingerprint(saved, fingerprint(load_folder(moved, 32), moved, "folder"))
    subset = load_dataset("folder", root, image_size=32, train_subset=4, val_split=1, seed=3)
    check_fingerprint(saved, fingerprint(subset, root, "folder"))  # describes the split drawn from

    os.rename(os.path.join(moved, "train", "class0", "0.png"), os.path.join(moved, "train", "class0", "9.png"))
    with pytest.raises(UserError, match="other files"):
        check_fingerprint(saved, fingerprint(load_folder(moved, 32), moved, "folder"))
    for split in ("train", "test"):
        shutil.copytree(os.path.join(root, split, "class0"), os.path.join(moved, split, "extra"))
    with pytest.raises(UserError) as e:
        check_fingerprint(saved, fingerprint(load_folder(moved, 32), moved, "folder"))
    message = str(e.value)
    assert message.startswith("--resume: the data differ from the run's: 3 classes there, 4 here")
    assert "9 training images there, 12 here" in message and "\n" not in message
    with pytest.raises(UserError, match="^--eval-only: .*3 classes there, 4 here"):
        check_fingerprint(saved, fingerprint(load_folder(moved, 32), moved, "folder"), "--eval-only",
                          keys=datamod.MODEL_KEYS)
    check_fingerprint(None, saved)  # a run from before fingerprints: nothing to compare


def test_fingerprint_of_an_in_memory_set():
    x = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8)
    y = torch.arange(50) % 10
    classes = [str(i) for i in range(10)]

    def make(train_x, train_y):
        return datamod._in_memory("c10", (train_x, train_y), (x[:20], y[:20]), classes, None)

    saved = fingerprint(make(x, y), "data", "c10")
    check_fingerprint(saved, fingerprint(make(x.clone(), y.clone()), "elsewhere", "c10"))
    changed = x.clone()
    changed[0] = 255 - changed[0]  # the first image is always in the pixel sample
    with pytest.raises(UserError, match="labels or pixels"):
        check_fingerprint(saved, fingerprint(make(changed, y), "data", "c10"))
    with pytest.raises(UserError, match="labels or pixels"):
        check_fingerprint(saved, fingerprint(make(x, y.roll(1)), "data", "c10"))
    with pytest.raises(UserError, match="dataset c10 there, c100 here"):
        check_fingerprint(saved, {**saved, "dataset": "c100"})


# ---------------------------------------------------------------- 5. subset decoding

def test_train_subset_decodes_only_its_images(tmp_path, monkeypatch):
    root = make_image_folder(str(tmp_path / "d"), n_train=10, n_test=2)
    full = load_folder(root, 32)
    decoded = []
    import images
    real = images.read_image
    monkeypatch.setattr(images, "read_image", lambda path, *a: decoded.append(path) or real(path, *a))
    data = load_dataset("folder", root, image_size=32, train_subset=7, seed=5)
    assert len(decoded) == 7 + 8  # the subset and the test split, not the 40 training images
    # The same draw as before: randperm over the training file list, sorted.
    keep = torch.randperm(40, generator=torch.Generator().manual_seed(5))[:7].sort().values
    assert torch.equal(data.train_x, full.train_x[keep]) and torch.equal(data.train_y, full.train_y[keep])
    x = data.train_x.double() / 255
    assert np.allclose(data.mean, x.mean(dim=(0, 2, 3)).numpy())  # the statistics of the images used

    same_stats = load_dataset("folder", root, image_size=32, train_subset=7, seed=5, subset_stats=False)
    assert same_stats.mean == full.mean and same_stats.std == full.std  # today's numbers, bit for bit
    assert torch.equal(same_stats.train_x, data.train_x)
    args = cli.get_args_parser().parse_args(["--dataset", "folder", "--data-dir", root, "--train-subset", "7",
                                             "--seed", "5"])
    assert torch.equal(__import__('build').load_data(args).train_x, data.train_x)  # main.py's call, unchanged
    with pytest.raises(UserError, match="--train-subset 41 is larger than the training set"):
        load_dataset("folder", root, train_subset=41)


# ---------------------------------------------------------------- 6. which split is evaluated

def test_test_split_is_recorded_and_both_warn(tmp_path, capsys):
    root = make_image_folder(str(tmp_path / "d"), n_train=2, n_test=1, splits=("train", "val"))
    assert load_folder(root, 32).test_split == "val"
    assert capsys.readouterr().err == ""
    make_image_folder(root, n_train=2, n_test=2, splits=("train", "test"))
    data = load_folder(root, 32)
    err = capsys.readouterr().err.strip().splitlines()
    assert data.test_split == "test" and len(data.test_y) == 8
    assert len(err) == 1 and "test/ and val/" in err[0]


def test_single_class_training_set_warns(tmp_path, capsys):
    root = make_image_folder(str(tmp_path / "d"), n_train=3, n_test=1, classes=1)
    load_dataset("folder", root)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "class0" in err[0] and err[0].startswith("warning:")
