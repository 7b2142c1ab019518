"""End-to-end: main.py learns a learnable task, resumes exactly, logs every epoch, talks to
Comet offline, and turns bad input into one clear line."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
import zipfile

import pytest
import torch

import build
import main as cli
from utils import UserError
from conftest import ROOT, TINY, make_image_folder, model_params, run_cli


def train(*argv):
    args = cli.get_args_parser().parse_args([str(a) for a in argv])
    return cli.main(args)


def test_learns_a_learnable_task_and_logs_every_epoch(tmp_path):
    data = make_image_folder(str(tmp_path / "data"), n_train=40, n_test=12)
    out = tmp_path / "run"
    history = train("--dataset", "folder", "--data-dir", data, "--output-dir", out, "--max-epochs", 6,
                    "--lr", "2e-3", *TINY, "--autoaugment", "--label-smoothing", "--input-path", "device")
    assert history[-1]["test_acc"] >= 0.9, history[-1]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert {"train_loss", "train_acc", "test_loss", "test_acc", "lr", "epoch_seconds", "train_images_per_second"} <= set(rows[0])
    config = json.loads((out / "config.json").read_text())
    assert config["dataset"] == "folder" and config["autoaugment"] and config["num_classes"] == 4
    assert config["classes"] == ["class0", "class1", "class2", "class3"]
    weights = torch.load(out / "model.pth")
    assert "pos_embed" in weights and (out / "augmented.png").stat().st_size > 0


def test_user_flags_are_not_overwritten(tmp_path):
    data = make_image_folder(str(tmp_path / "data"), n_train=4, n_test=2)
    out = tmp_path / "run"
    train("--dataset", "folder", "--data-dir", data, "--output-dir", out, "--max-epochs", 1, "--num-classes", 7,
          *TINY, "--warmup-epoch", "0")
    config = json.loads((out / "config.json").read_text())
    assert config["num_classes"] == 7 and config["hidden"] == 64 and config["patch_size"] == 4
    assert torch.load(out / "model.pth")["head.1.bias"].shape == (7,)


def _run_args(data, out, epochs=3):
    return ["--dataset", "folder", "--data-dir", data, "--output-dir", out, "--max-epochs", epochs, *TINY,
            "--dropout", "0.1", "--mixup", "--autoaugment", "--input-path", "workers"]


@pytest.mark.slow
def test_kill_and_resume_gives_identical_weights(tmp_path):
    data = make_image_folder(str(tmp_path / "data"), n_train=40, n_test=8)
    code, _, err = run_cli(*_run_args(data, tmp_path / "straight"))
    assert code == 0, err

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "main.py"), *map(str, _run_args(data, killed))],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # into the second epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "model.pth").exists(), "the run finished before it was killed; kill earlier"
    code, _, err = run_cli(*_run_args(data, killed), "--resume")
    assert code == 0, err

    a, b = torch.load(tmp_path / "straight" / "model.pth"), torch.load(killed / "model.pth")
    assert all(torch.equal(a[k], b[k]) for k in a)
    with open(killed / "metrics.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3]


@pytest.mark.slow
def test_resume_refuses_a_changed_recipe(tmp_path):
    data = make_image_folder(str(tmp_path / "data"), n_train=4, n_test=2)
    out = tmp_path / "run"
    train(*_run_args(data, out, epochs=2))
    code, _, err = run_cli(*_run_args(data, out, epochs=2), "--lr", "0.5", "--resume")
    assert code == 2 and "--lr" in err and len(err.strip().splitlines()) == 1
    # And a second run into the same folder without --resume is refused rather than overwriting it.
    code, _, err = run_cli(*_run_args(data, out, epochs=2))
    assert code == 2 and "--resume" in err


@pytest.mark.slow
def test_comet_offline_logs_metrics(tmp_path):
    pytest.importorskip("comet_ml")
    data = make_image_folder(str(tmp_path / "data"), n_train=8, n_test=4)
    out = tmp_path / "run"
    train("--dataset", "folder", "--data-dir", data, "--output-dir", out, "--max-epochs", 2, *TINY, "--comet-offline")
    archives = list((out / "comet").glob("*.zip"))
    assert len(archives) == 1
    with zipfile.ZipFile(archives[0]) as z:
        text = "".join(z.read(n).decode(errors="ignore") for n in z.namelist() if n.endswith(".json"))
    assert "test_acc" in text and "augmented_training_images" in text


def test_comet_failure_is_a_warning_not_a_crash(tmp_path, monkeypatch, capsys):
    pytest.importorskip("comet_ml")
    import comet_ml

    def refuse(*a, **k):
        raise ValueError("Invalid API key")
    monkeypatch.setattr(comet_ml, "Experiment", refuse)
    data = make_image_folder(str(tmp_path / "data"), n_train=4, n_test=2)
    history = train("--dataset", "folder", "--data-dir", data, "--output-dir", tmp_path / "run", "--max-epochs", 1,
                    *TINY, "--warmup-epoch", "0", "--api-key", "bogus")
    assert len(history) == 1 and "Comet is off" in capsys.readouterr().err
    assert (tmp_path / "run" / "metrics.csv").exists()


@pytest.mark.slow
def test_eval_only_prints_loss_and_accuracy(tmp_path):
    data = make_image_folder(str(tmp_path / "data"), n_train=8, n_test=4)
    out = tmp_path / "run"
    history = train("--dataset", "folder", "--data-dir", data, "--output-dir", out, "--max-epochs", 2, *TINY)
    code, stdout, err = run_cli("--dataset", "folder", "--data-dir", data, *TINY, "--eval-only",
                                "--weights", out / "model.pth")
    assert code == 0, err
    assert f"test_acc {history[-1]['test_acc']:.4f}" in stdout


@pytest.mark.parametrize("argv,needle", [
    (["--dataset", "imagenet"], "unknown dataset"),
    (["--model-name", "resnet9000"], "unknown model"),
    (["--hidden", "100", "--head", "12"], "not divisible by --head"),
    (["--patch", "5"], "not divisible"),
    (["--autoaugment", "--randaugment"], "one augmentation policy"),
    (["--eval-only", "--weights", "/nonexistent.pth"], "checkpoint not found"),
    (["--lr", "-1"], "--lr"),
    (["--batch-size", "0"], "--batch-size"),
    (["--optimizer", "lbfgs"], "unknown optimizer"),
    (["--smoothing", "1.5"], "--smoothing"),
    (["--num-classes", "2"], "too small"),
    (["--data-dir", "/nonexistent"], "--dataset folder needs"),
])
def test_bad_input_is_one_line_and_nonzero(tmp_path, capsys, argv, needle):
    data = make_image_folder(str(tmp_path / "data"), n_train=2, n_test=1)
    base = ["--dataset", "folder", "--data-dir", data, "--output-dir", tmp_path / "run", "--no-progress", "--workers", "0"]
    code = cli.cli([str(a) for a in base + argv])  # in-process: the same handler as the command line
    err = capsys.readouterr().err
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err


@pytest.mark.slow
def test_unreadable_checkpoint_is_one_line(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x00garbage")
    data = make_image_folder(str(tmp_path / "data"), n_train=2, n_test=1)
    code, _, err = run_cli("--dataset", "folder", "--data-dir", data, "--eval-only", "--weights", bad)
    assert code == 2 and "cannot read checkpoint" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_dry_run_writes_nothing(tmp_path):
    data = make_image_folder(str(tmp_path / "data"), n_train=40, n_test=40)
    out = tmp_path / "run"
    import glob
    import tempfile
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "vit-cifar-dry-*")))
    code, stdout, err = run_cli("--dataset", "folder", "--data-dir", data, "--output-dir", out, *TINY, "--dry-run")
    assert code == 0, err
    assert not out.exists()
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "vit-cifar-dry-*"))) == before  # scratch removed


@pytest.mark.slow
def test_pretrained_backbone_trains_at_its_own_input_size(tmp_path):
    """A timm backbone from a local state dict (offline): head replaced, images resized to 160."""
    import timm
    backbone = timm.create_model("test_vit", num_classes=1000)
    weights = tmp_path / "test_vit.pth"
    torch.save(backbone.state_dict(), weights)
    data = make_image_folder(str(tmp_path / "data"), n_train=4, n_test=2)
    out = tmp_path / "run"
    train("--dataset", "folder", "--data-dir", data, "--output-dir", out, "--model-name", "timm/test_vit",
          "--pretrained", weights, "--max-epochs", 1, "--warmup-epoch", 0, "--batch-size", 8, "--workers", 0,
          "--no-progress")
    config = json.loads((out / "config.json").read_text())
    assert config["image_size"] == 32 and config["input_size"] == 160
    trained = torch.load(out / "model.pth")
    assert trained["head.weight"].shape[0] == 4
    # One epoch of Adam moves the backbone a little, never to somewhere unrelated.
    key = "blocks.0.attn.qkv.weight"
    start = backbone.state_dict()[key]
    assert (trained[key] - start).abs().max() < 0.05 and not torch.equal(trained[key], start)


@pytest.mark.slow
def test_compiled_step_matches_eager(tmp_path):
    """--compile on (torch.compile, the CUDA default) computes the same training as eager (the
    compiled augmentation's equality is test_autoaugment_meta_and_input's)."""
    data = make_image_folder(str(tmp_path / "data"), n_train=8, n_test=4)
    common = ["--dataset", "folder", "--data-dir", data, "--max-epochs", 1, "--warmup-epoch", 0, "--batch-size", 8,
              "--workers", 0, "--no-progress", "--num-layers", 1, "--hidden", 32, "--head", 4, "--mlp-hidden", 32,
              "--input-path", "device"]
    eager = train(*common, "--output-dir", tmp_path / "eager", "--compile", "off")
    compiled = train(*common, "--output-dir", tmp_path / "compiled", "--compile", "on")
    a, b = torch.load(tmp_path / "eager" / "model.pth"), torch.load(tmp_path / "compiled" / "model.pth")
    assert set(a) == set(b)  # the compiled wrapper's prefix never reaches the saved weights
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-4), k
    assert abs(eager[-1]["train_loss"] - compiled[-1]["train_loss"]) < 1e-4


@pytest.mark.parametrize("name", model_params(__import__("models").model_names()))
def test_every_registered_model_builds_from_the_command_line_flags(name):
    """main.py's flag -> option wiring reaches every registry entry (the zoo files test the maths)."""
    import models
    takes = models.accepted_options(name)
    argv = ["--model-name", name, "--dropout", "0.1"] + ["--drop-path", "0.1"] * ("drop_path" in takes)
    args = cli.get_args_parser().parse_args(argv)
    build.resolve_args(args)
    args.num_classes = 10
    model = build.make_model(args, in_chans=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    # The options arrived: some dropout module has the rate asked for.
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.1 for m in model.modules()), name
    if "drop_path" not in takes:  # and a model without drop path refuses the flag in one line
        args = cli.get_args_parser().parse_args(["--model-name", name, "--drop-path", "0.1"])
        with pytest.raises(UserError, match="--drop-path is not an option of"):
            build.resolve_args(args)


def test_ema_of_a_batchnorm_model_tracks_its_statistics(tmp_path):
    """--ema-decay evaluates and saves the averaged weights, batch-norm statistics included."""
    data = make_image_folder(str(tmp_path / "data"), n_train=16, n_test=4)
    out = tmp_path / "run"
    train("--dataset", "folder", "--data-dir", data, "--output-dir", out, "--model-name", "cnn", "--max-epochs", 2,
          "--warmup-epoch", 0, "--batch-size", 16, "--workers", 0, "--no-progress", "--ema-decay", "0.5")
    saved = torch.load(out / "model.pth")
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    raw = ckpt["model"]
    bn = next(k for k in saved if k.endswith("running_mean"))
    # Fresh batch norm starts at mean 0; the average must have moved with the trained model's.
    assert saved[bn].abs().sum() > 0 and raw[bn].abs().sum() > 0
    assert not torch.equal(saved[bn], raw[bn])  # the average, not a copy of the last weights


def test_mixup_off_epoch_stops_mixing_after_that_many_epochs(tmp_path, monkeypatch):
    """--mixup-off-epoch N (timm's flag): epochs 1..N mix, the later ones do not."""
    import train as train_module
    seen = []
    real = train_module.train_one_epoch

    def spy(*a, mixer=None, **k):
        seen.append(mixer is not None)
        return real(*a, mixer=mixer, **k)

    monkeypatch.setattr(train_module, "train_one_epoch", spy)
    data = make_image_folder(str(tmp_path / "data"), n_train=4, n_test=2)
    common = ["--dataset", "folder", "--data-dir", data, "--output-dir", tmp_path / "run", *TINY, "--mixup",
              "--cutmix", "--mixup-off-epoch", 2]
    train(*common, "--max-epochs", 3)
    assert seen == [True, True, False]
