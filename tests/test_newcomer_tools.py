"""The findings of a new user's audit about the tools and checkpoints, one test (or a few) each: the
tools' one-line errors (plot.py, export.py, sweep.py, predict.py, pretrained.py), and checkpoints
loaded with weights_only. (Findings 1-6, the data, are in test_newcomer_data.py.)"""
import os
import time

import numpy as np
import pytest
import torch

import build
import main as cli
from conftest import TINY, make_image_folder
from utils import UserError, atomic_save, load_checkpoint


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 1-epoch tiny run on the learnable 4-class task: (run folder, data folder)."""
    root = tmp_path_factory.mktemp("newcomer")
    data = make_image_folder(str(root / "data"), n_train=4, n_test=2)
    out = root / "run"
    cli.main(cli.get_args_parser().parse_args(["--dataset", "folder", "--data-dir", data, "--output-dir", str(out),
                                               "--max-epochs", "1", *TINY, "--num-layers", "1"]))
    return str(out), data


# ---------------------------------------------------------------- 7. plot.py

def test_plot_unknown_format_is_one_line(run, tmp_path, capsys):
    import plot

    assert plot.cli([run[0], "--out", str(tmp_path / "c.xyz")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ".png" in err and ".pdf" in err and "c.xyz" in err
    assert plot.cli([run[0], "--out", str(tmp_path / "c")]) == 0 and (tmp_path / "c.png").is_file()


def test_curve_titles_name_only_the_splits_drawn(run):
    import plot

    frame = plot.read_metrics(run[0])
    assert "val_acc" not in frame
    title = plot.draw_curves({"run": frame}).axes[0].get_title()
    assert "val" not in title and "dashed: train" in title and "solid: test" in title
    with_val = frame.rename(columns={"test_loss": "val_loss", "test_acc": "val_acc"})
    assert "dotted: val" in plot.draw_curves({"run": with_val}).axes[0].get_title()


# ---------------------------------------------------------------- 8. export.py

def test_export_opset_out_of_range_is_one_line(run, tmp_path, capfd):
    import export

    low, high = export.opset_range()
    assert export.cli(["--run", run[0], "--format", "onnx", "--out", str(tmp_path / "m.onnx"), "--opset", "3"]) == 2
    out, err = capfd.readouterr()
    assert out == "" and err.count("\n") == 1 and f"{low} to {high}" in err


def test_export_failure_prints_no_graph(run, tmp_path, capfd):
    import export

    # In range, but too low for the attention operator: the exporter fails after tracing.
    assert export.cli(["--run", run[0], "--format", "onnx", "--out", str(tmp_path / "m.onnx"), "--opset", "9"]) == 1
    out, err = capfd.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("error: cannot export")


# ---------------------------------------------------------------- 9. sweep.py

def test_sweep_where_every_trial_fails(tmp_path, capsys):
    import sweep

    data = make_image_folder(str(tmp_path / "data"), n_train=2, n_test=1)
    argv = ["--study", "bad", "--storage", f"sqlite:///{tmp_path / 's.db'}", "--out-dir", str(tmp_path / "sw"),
            "--trials", "2", "--param", "lr=uniform:0.001:0.002", "--",
            "--dataset", "folder", "--data-dir", data, "--image-size", "30", *TINY]  # 30 is not 8 patches
    assert sweep.cli(argv) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("note:")]
    assert "Traceback" not in "\n".join(err)
    assert len(err) == 3 and all(e.startswith(f"trial {i} failed: --image-size 30") for i, e in enumerate(err[:2]))
    assert err[2].startswith("error: no trial finished: 2 of 2 failed")


def test_sweep_passes_its_callback_to_main(tmp_path, monkeypatch):
    import sweep
    import train

    seen = []

    def fake_main(args, epoch_callbacks=()):
        for epoch in (1, 2):
            for callback in epoch_callbacks:
                callback(epoch, {"epoch": epoch, "test_acc": 0.5})
        seen.append(len(epoch_callbacks))
        return [{"epoch": 2, "test_acc": 0.5}]

    monkeypatch.setattr(train, "train", fake_main)  # what main.main runs; sweep calls it directly
    argv = ["--study", "cb", "--storage", f"sqlite:///{tmp_path / 's.db'}", "--out-dir", str(tmp_path / "sw"),
            "--trials", "1", "--pruner", "none", "--param", "lr=uniform:0.001:0.002", "--", "--dataset", "folder"]
    assert sweep.cli(argv) == 0 and seen == [1]
    import optuna
    trial = optuna.load_study(study_name="cb", storage=f"sqlite:///{tmp_path / 's.db'}").trials[0]
    assert trial.intermediate_values == {1: 0.5, 2: 0.5}


# ---------------------------------------------------------------- 10. predict.py --out

def test_predict_out_errors_name_the_users_path(run, tmp_path, capsys):
    import predict

    folder = tmp_path / "outdir"
    folder.mkdir()
    test_dir = os.path.join(run[1], "test")
    assert predict.cli(["--run", run[0], test_dir, "--out", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(folder) in err and ".tmp-" not in err
    (tmp_path / "a_file").write_text("x")
    bad = str(tmp_path / "a_file" / "p.csv")  # a folder that is a file
    assert predict.cli(["--run", run[0], test_dir, "--out", bad]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and bad in err and ".tmp-" not in err


# ---------------------------------------------------------------- 11. pretrained.py offline

def test_hub_offline_fails_fast_and_names_the_flag(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants
    import pretrained

    monkeypatch.setattr(pretrained, "_reachable", lambda url, timeout=3.0: False)  # as offline, whatever the network
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # and nothing cached
    before = huggingface_hub.constants.HF_HUB_OFFLINE
    start = time.perf_counter()
    with pytest.raises(UserError) as e:
        pretrained.build_pretrained("timm/resnet18", 10, 3, weights="hub")
    assert time.perf_counter() - start < 20  # was 52 s of retries
    assert "--pretrained PATH" in str(e.value) and "weights=PATH" not in str(e.value)
    assert "Retry" not in capsys.readouterr().err
    assert huggingface_hub.constants.HF_HUB_OFFLINE == before  # offline mode only for that call


def test_torchvision_hub_failure_names_the_flag(monkeypatch):
    import urllib.error
    import pretrained

    def offline(*a, **k):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(UserError, match=r"--pretrained PATH"):
        pretrained.build_pretrained("tv/resnet18", 10, 3, weights="hub")


# ---------------------------------------------------------------- 12. checkpoints, weights_only

def _same(a, b):
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if torch.is_tensor(a):
        return torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b) and a.dtype == b.dtype
    return a == b or (a != a and b != b)  # NaN


def test_main_checkpoints_load_with_weights_only(run):
    out, _ = run
    for name in ("checkpoint.pt", "model.pth"):
        path = os.path.join(out, name)
        assert _same(load_checkpoint(path), torch.load(path, weights_only=False))
    ckpt = load_checkpoint(os.path.join(out, "checkpoint.pt"))
    from utils import set_rng_state
    set_rng_state(ckpt["rng"])  # the RNG states come back usable


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "rmsprop", "adan", "madgrad"])
def test_every_optimizer_and_schedule_checkpoint_loads(tmp_path, optimizer):
    """The dict main.py saves after an epoch, for each optimizer and schedule, with SAM, EMA and
    a scaler, round-trips through load_checkpoint."""
    from engine import EMA
    from build import make_optimizer, make_scheduler
    from optim import SCHEDULERS
    from utils import rng_state

    for scheduler_name in SCHEDULERS.names():
        args = cli.get_args_parser().parse_args(["--optimizer", optimizer, "--scheduler", scheduler_name, "--sam",
                                                 "--folds", "0", "--max-epochs", "3", "--warmup-epoch", "1"])
        build.resolve_args(args)
        args.device_type, args.fold = "cpu", (5, 2)  # a tuple, as protocol.py sets it
        model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
        opt = make_optimizer(model, args)
        sched = make_scheduler(opt, args, 2)
        x = torch.randn(2, 4)

        def closure():  # SAM's second forward-backward pass
            loss = model(x).sum()
            loss.backward()
            return loss
        closure()
        opt.step(closure)  # fills the optimizer's state (momenta, step counts)
        sched.step()
        ema = EMA(model, 0.9)
        scaler = torch.amp.GradScaler("cpu")
        history = [{"epoch": 1, "train_loss": 0.5, "test_acc": np.float64(0.25), "lr": 1e-3}]
        saved = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                 "scaler": scaler.state_dict(), "ema": ema.state_dict(), "epoch": 0, "history": history,
                 "rng": rng_state(), "args": vars(args)}
        path = str(tmp_path / f"{scheduler_name}.pt")
        atomic_save(saved, path)
        assert _same(load_checkpoint(path), saved), scheduler_name


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "ran"
    path = str(tmp_path / "evil.pth")
    torch.save({"model": {"w": torch.zeros(2)}, "payload": _Evil(marker)}, path)
    with pytest.raises(UserError) as e:
        load_checkpoint(path)
    assert not marker.exists()
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"refusing to load {path}") and "system" in message
    import pickle
    with open(tmp_path / "evil.pkl", "wb") as f:  # a plain pickle, not torch.save's zip
        pickle.dump(_Evil(marker), f)
    with pytest.raises(UserError):
        load_checkpoint(str(tmp_path / "evil.pkl"))
    assert not marker.exists()


def test_checkpoint_on_a_really_full_disk_is_an_oserror(tmp_path):
    """torch's writer raises a RuntimeError on a full disk; atomic_save gives the OSError
    (errno 28) that the command line prints in one line, and leaves no temp file."""
    import errno
    import subprocess

    import torch

    import utils

    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        with pytest.raises(OSError) as e:
            utils.atomic_save({"w": torch.randn(100_000)}, str(small / "checkpoint.pt"))
        assert e.value.errno == errno.ENOSPC
        assert os.listdir(small) == []
    finally:
        subprocess.run(["umount", str(small)])
