"""Bad input, a table of it: every case exits non-zero with exactly one line on stderr and no
traceback. Most run in-process through main.cli (the same handler as the command line); a few
go through a real `python main.py`. Then valid but unusual inputs, which must simply train.

Cases already in test_train.py's table (unknown dataset/model/optimizer, --lr -1,
--batch-size 0, --smoothing 1.5, ...) are not repeated here.
"""
import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import main as cli
from conftest import ROOT, TINY, make_image_folder


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A small data folder and a few real weight files to mismatch against."""
    base = tmp_path_factory.mktemp("bad_input")
    data = make_image_folder(str(base / "data"), n_train=2, n_test=1)
    torch.set_num_threads(1)

    def train(name, *extra, data=data):
        out = base / name
        args = cli.get_args_parser().parse_args([str(a) for a in [
            "--dataset", "folder", "--data-dir", data, "--output-dir", out, "--max-epochs", 1, *TINY,
            "--warmup-epoch", 0, *extra]])
        cli.main(args)
        return out

    seven_classes = make_image_folder(str(base / "data7"), n_train=1, n_test=1, classes=7)
    world = {"base": base, "data": data, "default": train("default"),
             "hidden32": train("hidden32", "--hidden", 32), "classes7": train("classes7", data=seven_classes)}
    # `python main.py` for a few cases, started now, to run while the in-process cases do (each
    # spends seconds importing torch).
    world["processes"] = {}
    for case_id in REAL_PROCESS_CASES:
        _, extra, _, make_data = CASES[IDS.index(case_id)]
        argv = _argv(world, tmp_path_factory.mktemp(case_id), extra, make_data)
        world["processes"][case_id] = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "main.py"), *argv], cwd=ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
    yield world
    for proc in world["processes"].values():
        proc.kill()
        proc.communicate()


# ---------------------------------------------------------------- data folders, broken on purpose

def _fresh(base, name):
    return make_image_folder(str(base / name), n_train=2, n_test=1)


def data_is_a_file(base):
    path = base / "data.txt"
    path.write_text("not a folder")
    return str(path)


def no_test_split(base):
    root = _fresh(base, "d")
    shutil.rmtree(os.path.join(root, "test"))
    return root


def train_without_class_folders(base):
    root = _fresh(base, "d")
    shutil.rmtree(os.path.join(root, "train"))
    os.makedirs(os.path.join(root, "train"))
    return root


def class_folders_without_images(base):
    root = _fresh(base, "d")
    for c in os.listdir(os.path.join(root, "train")):
        folder = os.path.join(root, "train", c)
        for name in os.listdir(folder):
            os.remove(os.path.join(folder, name))
        open(os.path.join(folder, "README.txt"), "w").write("no images here")
    return root


def zero_byte_image(base):
    root = _fresh(base, "d")
    open(os.path.join(root, "train", "class1", "0.png"), "wb").close()
    return root


def truncated_png(base):
    root = _fresh(base, "d")
    path = os.path.join(root, "test", "class2", "0.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    blob = open(path, "rb").read()
    open(path, "wb").write(blob[: len(blob) // 2])
    return root


def broken_symlink_image(base):
    root = _fresh(base, "d")
    os.symlink(os.path.join(root, "nowhere.png"), os.path.join(root, "train", "class0", "gone.png"))
    return root


def unseen_test_class(base):
    root = _fresh(base, "d")
    os.makedirs(os.path.join(root, "test", "class9"))
    Image.new("RGB", (8, 8)).save(os.path.join(root, "test", "class9", "a.png"))
    return root


def one_class_with_label_smoothing(base):
    return make_image_folder(str(base / "d"), n_train=2, n_test=1, classes=1)


# ---------------------------------------------------------------- the table

# (id, extra argv, text the one line must contain, data folder maker or None)
# argv items may name the world's weights as {default}, {hidden32}, {classes7}, {base}.
CASES = [
    # argparse: one line too (main.py's parser overrides error())
    ("batch-size-not-a-number", ["--batch-size", "abc"], "--batch-size", None),
    ("max-epochs-not-an-int", ["--max-epochs", "1.5"], "--max-epochs", None),
    ("device-not-a-choice", ["--device", "tpu"], "--device", None),
    ("unknown-flag", ["--learning-rate", "0.1"], "unrecognized arguments", None),
    # out of range
    ("max-epochs-zero", ["--max-epochs", "0"], "--max-epochs", None),
    ("eval-batch-size-negative", ["--eval-batch-size", "-8"], "--eval-batch-size", None),
    ("image-size-zero", ["--image-size", "0"], "--image-size", None),
    ("log-interval-zero", ["--log-interval", "0"], "--log-interval", None),
    ("dropout-one", ["--dropout", "1"], "--dropout", None),
    ("drop-path-negative", ["--drop-path", "-0.1"], "--drop-path", None),
    ("ema-decay-one", ["--ema-decay", "1"], "--ema-decay", None),
    ("beta1-one", ["--beta1", "1"], "--beta1", None),
    ("mix-prob-above-one", ["--mixup", "--mix-prob", "1.5"], "--mix-prob", None),
    ("workers-negative", ["--workers", "-1"], "--workers", None),
    ("cutout-negative", ["--cutout", "-4"], "--cutout", None),
    ("grad-clip-negative", ["--grad-clip", "-1"], "--grad-clip", None),
    ("head-zero", ["--head", "0"], "--head", None),
    ("patch-size-does-not-divide", ["--patch-size", "5"], "--patch-size", None),
    ("sam-rho-zero", ["--sam", "--sam-rho", "0"], "--sam-rho", None),
    ("train-subset-too-large", ["--train-subset", "1000"], "--train-subset", None),
    ("momentum-negative", ["--optimizer", "sgd", "--momentum", "-1"], "--momentum", None),
    ("ra-magnitude-out-of-range", ["--randaugment", "--ra-m", "40"], "--ra-m", None),
    ("step-size-zero", ["--scheduler", "step", "--step-size", "0"], "--step-size", None),
    ("mixup-alpha-negative", ["--mixup", "--mixup-alpha", "-1"], "--mixup-alpha", None),
    ("gamma-negative", ["--scheduler", "step", "--gamma", "-1"], "--gamma", None),
    ("ra-n-negative", ["--randaugment", "--ra-n", "-1"], "--ra-n", None),
    # contradictory
    ("warmup-not-below-epochs", ["--max-epochs", "3", "--warmup-epoch", "3", "--lr-per-step"], "--warmup-epoch", None),
    ("min-lr-above-lr", ["--lr", "0.01", "--min-lr", "0.1"], "--min-lr", None),
    ("sam-and-adaptive-sam", ["--sam", "--adaptive-sam"], "--sam", None),
    ("patch-and-patch-size-disagree", ["--patch", "4", "--patch-size", "4"], "disagree", None),
    ("weights-without-eval-only", ["--weights", "{default}/model.pth"], "--eval-only", None),
    ("eval-only-without-weights", ["--eval-only"], "--weights", None),
    ("eval-only-and-resume", ["--eval-only", "--weights", "{default}/model.pth", "--resume"], "--resume", None),
    ("nesterov-without-momentum", ["--optimizer", "sgd", "--nesterov", "--momentum", "0"], "--nesterov", None),
    ("fp16-on-the-cpu", ["--device", "cpu", "--precision", "fp16"], "fp16", None),
    ("mps-not-available", ["--device", "mps"], "mps", None),
    # unknown names
    ("unknown-scheduler", ["--scheduler", "linear"], "unknown scheduler", None),
    ("unknown-criterion", ["--criterion", "focal"], "unknown criterion", None),
    # data folders
    ("data-dir-is-a-file", [], "--dataset folder needs", data_is_a_file),
    ("no-test-split", [], "--dataset folder needs", no_test_split),
    ("train-without-class-folders", [], "train", train_without_class_folders),
    ("class-folders-without-images", [], "train", class_folders_without_images),
    ("zero-byte-image", [], "cannot read image", zero_byte_image),
    ("truncated-png", [], "cannot read image", truncated_png),
    ("broken-symlink-image", [], "cannot read image", broken_symlink_image),
    ("test-class-not-in-train", [], "class9", unseen_test_class),
    ("one-class-with-label-smoothing", ["--label-smoothing"], "class", one_class_with_label_smoothing),
    # checkpoints that do not fit
    ("eval-weights-of-another-hidden", ["--eval-only", "--weights", "{hidden32}/model.pth"], "differs from the run's 32", None),
    ("eval-weights-of-another-class-count", ["--eval-only", "--weights", "{classes7}/model.pth"],
     "the data differ from the run's: 7 classes there, 4 here", None),
    ("eval-ensemble-with-one-misfit", ["--eval-only", "--weights", "{default}/model.pth", "{hidden32}/model.pth"],
     "does not fit", None),
    ("eval-weights-is-a-folder", ["--eval-only", "--weights", "{default}"], "{default}", None),
    ("resume-from-weights-only", ["--resume", "{default}/model.pth", "--output-dir", "{base}/r1"],
     "not a ViT-CIFAR training checkpoint", None),
    ("resume-a-run-of-another-hidden", ["--max-epochs", "1", "--warmup-epoch", "0", "--resume", "{hidden32}/checkpoint.pt",
                                        "--output-dir", "{base}/r2"], "--hidden", None),
    ("resume-with-nothing-to-resume", ["--resume", "--output-dir", "{base}/empty-run"], "no checkpoint", None),
    ("output-dir-is-a-file", ["--output-dir", "{default}/config.json"], "config.json", None),
    ("compile-graphs-on-the-cpu", ["--compile", "graphs"], "needs a CUDA device", None),
    ("compile-graphs-with-sgd", ["--compile", "graphs", "--optimizer", "sgd"], "adam or adamw", None),
    ("compile-step-with-plateau", ["--compile", "step", "--scheduler", "plateau"], "known in advance", None),
    ("compile-step-with-sam", ["--compile", "step", "--sam"], "SAM", None),
    ("compile-step-with-skip-nonfinite", ["--compile", "step", "--skip-nonfinite"], "--skip-nonfinite", None),
    ("cooldown-without-timm-cosine", ["--cooldown-epochs", "1", "--max-epochs", "3"], "timm_cosine", None),
    ("cooldown-the-whole-run", ["--scheduler", "timm_cosine", "--cooldown-epochs", "1"], "--cooldown-epochs", None),
    ("warmup-lr-above-lr", ["--scheduler", "timm_cosine", "--warmup-lr", "1"], "--warmup-lr", None),
    ("attn-dropout-on-a-vit", ["--attn-dropout", "0.1"], "--attn-dropout is not an option of vit", None),
    ("rrc-scale-zero", ["--crop", "timm_rrc", "--rrc-scale", "0", "1"], "--rrc-scale", None),
    ("rrc-ratio-reversed", ["--crop", "timm_rrc", "--rrc-ratio", "2", "1"], "--rrc-ratio", None),
    ("rrc-scale-without-timm-rrc", ["--rrc-scale", "0.5", "1"], "are for --crop timm_rrc", None),
    ("erasing-style-without-erasing", ["--erasing-style", "zhong"], "needs --random-erasing", None),
]

IDS = [c[0] for c in CASES]
assert len(CASES) >= 25 and len(set(IDS)) == len(IDS)
REAL_PROCESS_CASES = ["batch-size-not-a-number", "eval-weights-of-another-hidden", "zero-byte-image"]


def _argv(world, tmp_path, extra, make_data):
    data = make_data(tmp_path) if make_data else world["data"]
    base = ["--dataset", "folder", "--data-dir", data, "--output-dir", tmp_path / "run", "--max-epochs", "1", *TINY]
    subst = {k: str(v) for k, v in world.items() if k != "processes"}
    return [str(a).format(**subst) for a in base + extra]


def _check_one_line(code, err, needle, world):
    needle = needle.format(**{k: str(v) for k, v in world.items() if k != "processes"})
    assert code not in (0, None), f"exit {code}: the bad input was accepted"
    assert "Traceback" not in err, err
    # Warnings about the data may come first; the error itself is one line.
    lines = [line for line in err.strip().splitlines() if not line.startswith(("warning: ", "note: "))]
    assert len(lines) == 1, f"{len(lines)} lines on stderr:\n{err}"
    assert "error" in lines[0] and needle in lines[0], lines[0]


@pytest.mark.parametrize("case_id,extra,needle,make_data", CASES, ids=IDS)
def test_bad_input_in_process(world, tmp_path, capsys, case_id, extra, needle, make_data):
    argv = _argv(world, tmp_path, extra, make_data)
    try:
        code = cli.cli(argv)
    except SystemExit as e:  # argparse
        code = e.code
    except Exception as e:  # on the command line this would be a traceback
        pytest.fail(f"{type(e).__name__} escaped main.cli (a traceback on the command line): {e}")
    _check_one_line(code, capsys.readouterr().err, needle, world)


@pytest.mark.slow
@pytest.mark.parametrize("case_id", REAL_PROCESS_CASES)
def test_bad_input_through_a_real_process(world, case_id):
    proc = world["processes"][case_id]
    _, err = proc.communicate(timeout=300)
    code = proc.returncode
    _check_one_line(code, err, CASES[IDS.index(case_id)][2], world)


# ---------------------------------------------------------------- valid but unusual: these train

def _train_ok(data, out, capsys, *extra, epochs=2):
    code = cli.cli([str(a) for a in ["--dataset", "folder", "--data-dir", data, "--output-dir", out,
                                     "--max-epochs", epochs, *TINY, "--warmup-epoch", 0, *extra]])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "error" not in err.lower(), err
    with open(os.path.join(out, "metrics.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    weights = torch.load(os.path.join(out, "model.pth"))
    assert all(torch.isfinite(v).all() for v in weights.values())
    return json.loads(open(os.path.join(out, "config.json")).read()), rows


@pytest.mark.parametrize("path,policy", [("workers", "--autoaugment"), ("device", "--trivialaugment")])
def test_grayscale_folder_trains(tmp_path, capsys, path, policy):
    data = make_image_folder(str(tmp_path / "data"), n_train=3, n_test=1, mode="L")
    config, _ = _train_ok(data, tmp_path / "run", capsys, "--input-path", path, policy)
    assert config["in_chans"] == 1 and len(config["mean"]) == 1


def test_one_image_classes_train(tmp_path, capsys):
    data = make_image_folder(str(tmp_path / "data"), n_train=1, n_test=1)
    _, rows = _train_ok(data, tmp_path / "run", capsys, "--mixup", "--label-smoothing", "--input-path", "device")
    assert int(rows[0]["train_images"]) == 4 and int(rows[0]["test_images"]) == 4


@pytest.mark.parametrize("image_size", [64, 32])
def test_64px_images_train(tmp_path, capsys, image_size):
    data = make_image_folder(str(tmp_path / "data"), n_train=2, n_test=1, size=64)
    config, _ = _train_ok(data, tmp_path / "run", capsys, "--image-size", image_size, "--randaugment",
                          "--input-path", "device", epochs=1)
    assert config["image_size"] == image_size and config["patch_size"] == image_size // 8


def test_odd_class_names_train_and_evaluate(tmp_path, capsys):
    data = make_image_folder(str(tmp_path / "data"), n_train=2, n_test=1)
    names = ["class with spaces", "ünïcødé-クラス", 'comma,and"quote', "emoji 🐱"]
    for split in ("train", "test"):
        for i, name in enumerate(names):
            os.rename(os.path.join(data, split, f"class{i}"), os.path.join(data, split, name))
    out = tmp_path / "run"
    config, _ = _train_ok(data, out, capsys, "--input-path", "workers")
    assert config["classes"] == sorted(names)
    code = cli.cli(["--dataset", "folder", "--data-dir", data, *TINY, "--eval-only", "--weights", str(out / "model.pth")])
    captured = capsys.readouterr()
    assert code == 0 and "test_acc" in captured.out, captured.err


def test_mixed_formats_and_shapes_train(tmp_path, capsys):
    """JPEG, palette, RGBA, 16-bit grayscale and non-square images side by side."""
    data = make_image_folder(str(tmp_path / "data"), n_train=2, n_test=1)
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, (20, 48, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(os.path.join(data, "train", "class0", "wide.jpg"))
    Image.fromarray(rgb).convert("P").save(os.path.join(data, "train", "class1", "palette.png"))
    Image.fromarray(rng.integers(0, 255, (40, 40, 4), dtype=np.uint8), "RGBA").save(
        os.path.join(data, "train", "class2", "alpha.png"))
    Image.fromarray(rng.integers(0, 65535, (30, 30), dtype=np.uint16)).save(os.path.join(data, "test", "class3", "deep.png"))
    config, rows = _train_ok(data, tmp_path / "run", capsys, "--input-path", "device")
    assert config["in_chans"] == 3 and int(rows[0]["train_images"]) == 11
