"""A new user's findings about main.py, each a test that failed before its fix: locks,
names, refused combinations, clean failed starts, honest messages, evaluation cadence, what
--eval-only and --tta take from the run, the data fingerprint, and temp files never named."""
import csv
import errno
import math
import os
import subprocess
import sys

import pytest
from PIL import Image

import main as cli
import train
from conftest import ROOT, TINY, make_image_folder

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_image_folder(str(tmp_path_factory.mktemp("nc") / "data"), n_train=8, n_test=4)


def run(data, out, *extra):
    return cli.cli([str(a) for a in ["--dataset", "folder", "--data-dir", data, "--output-dir", out, *TINY, *extra]])


def one_error(capsys, needle):
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith(("note:", "warning:"))]
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    return err[0]


def test_a_second_run_in_the_same_folder_is_refused_and_a_stale_lock_taken_over(data, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text(str(os.getppid()))  # a live process holds it
    assert run(data, out, "--max-epochs", 1) == 2
    one_error(capsys, "is in use by another run")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / ".lock").write_text(str(dead.pid))  # its process is gone
    assert run(data, out, "--max-epochs", 1) == 0
    assert not (out / ".lock").exists() and (out / "model.pth").exists()
    (out / ".lock").write_text("")  # a run killed between creating its lock and writing its pid
    assert run(data, out, "--max-epochs", 1, "--resume") == 0


@pytest.mark.parametrize("argv,needle", [
    (["--experiment-name", "a/../../b"], "must be a plain folder name"),
    (["--folds", "3", "--seeds", "1,2"], "choose --folds or --seeds, not both"),
    (["--seed", "-1"], "--seed must be in [0, 2**63)"),
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--eval-every", "0"], "--eval-every must be positive"),
])
def test_refused_in_one_line(data, tmp_path, capsys, argv, needle):
    assert cli.cli(["--dataset", "folder", "--data-dir", data, *TINY, *argv]) == 2
    one_error(capsys, needle)
    assert not os.path.exists(os.path.join(ROOT, "runs", "b"))


def _interrupt_at(monkeypatch, epoch):
    real = train.train_one_epoch

    def fake(*a, **k):
        if a[6] == epoch:  # the 0-based epoch argument
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(train, "train_one_epoch", fake)


def test_ctrl_c_before_the_first_checkpoint_leaves_the_folder_as_found(data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "new"
    _interrupt_at(monkeypatch, 0)
    assert run(data, out, "--max-epochs", 3) == 130
    assert "nothing to resume" in capsys.readouterr().err
    assert not out.exists()  # no config.json or augmented.png left behind from a failed start


def test_ctrl_c_later_names_the_checkpoint_and_resume_works(data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    _interrupt_at(monkeypatch, 2)
    assert run(data, out, "--max-epochs", 3) == 130
    err = capsys.readouterr().err
    assert "the checkpoint of epoch 2 is kept" in err and "--resume" in err
    monkeypatch.undo()
    assert run(data, out, "--max-epochs", 3, "--resume") == 0


def test_eval_every_keeps_the_columns_and_always_evaluates_the_last_epoch(data, tmp_path):
    out = tmp_path / "run"
    assert run(data, out, "--max-epochs", 3, "--eval-every", 2) == 0
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    acc = [float(r["test_acc"]) for r in rows]
    assert math.isnan(acc[0]) and not math.isnan(acc[1]) and not math.isnan(acc[2])


def test_augmented_grid_is_large_and_captioned(data, tmp_path):
    out = tmp_path / "run"
    assert run(data, out, "--max-epochs", 1, "--autoaugment") == 0
    img = Image.open(out / "augmented.png")
    # 8 columns of 4x tiles (32 px shown as 128) with 4 px gaps, and a 24 px caption band on top
    assert img.width == 8 * (128 + 4) + 4 and (img.height - 24 - 4) % (128 + 4) == 0
    band = img.crop((0, 0, img.width, 20)).convert("L")
    assert min(band.getdata()) < 128  # the caption's text is there


def test_no_bars_when_stderr_is_not_a_terminal(data, tmp_path, capsys):
    argv = [a for a in TINY if a != "--no-progress"]
    assert cli.cli([str(a) for a in ["--dataset", "folder", "--data-dir", data, "--output-dir", tmp_path / "r",
                                     "--max-epochs", 1, *argv]]) == 0
    captured = capsys.readouterr()
    assert "\r" not in captured.err and "epoch   1 |" in captured.out


def test_tta_follows_the_runs_flips(data, tmp_path, capsys):
    assert run(data, tmp_path / "r", "--max-epochs", 1, "--no-hflip", "--tta") == 0
    captured = capsys.readouterr()
    assert "--tta skipped: this run trained without horizontal flips" in captured.err
    assert "flip TTA" not in captured.out


def test_eval_only_takes_the_model_from_the_runs_config_and_never_overwrites_it(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(data, out, "--max-epochs", 1, "--hidden", 32, "--head", 2) == 0
    capsys.readouterr()
    base = ["--dataset", "folder", "--data-dir", data, "--eval-only", "--weights", str(out / "model.pth")]
    assert cli.cli(base) == 0  # no size flag repeated: they come from config.json
    assert "test_acc" in capsys.readouterr().out
    assert cli.cli(base + ["--output-dir", str(out)]) == 2
    one_error(capsys, "would overwrite the training run's files")


def test_resume_on_other_data_is_refused(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(data, out, "--max-epochs", 1) == 0
    other = make_image_folder(str(tmp_path / "other"), n_train=8, n_test=4, classes=5)
    assert cli.cli([str(a) for a in ["--dataset", "folder", "--data-dir", other, "--output-dir", out, *TINY,
                                     "--max-epochs", 2, "--resume"]]) == 2
    one_error(capsys, "--resume: the data differ from the run's")


def test_write_errors_name_the_users_file_not_the_temp_file(data, tmp_path, monkeypatch, capsys):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    assert run(data, tmp_path / "run", "--max-epochs", 1) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "No space left on device" in line and ".tmp-" not in line and "config.json" in line


@pytest.mark.slow  # a subprocess
def test_bench_steps_zero_is_one_line():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench.py"), "--steps", "0"], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "--steps must be positive" in proc.stderr


def test_a_plot_that_fails_is_a_warning_not_a_lost_report(data, tmp_path, monkeypatch, capsys):
    import plot

    def broken(run_dir):
        raise TypeError("'value' must be an instance of str or bytes, not a float")

    monkeypatch.setattr(plot, "plot_run", broken)
    out = tmp_path / "run"
    assert run(data, out, "--max-epochs", 1) == 0
    assert "warning: could not draw curves (TypeError" in capsys.readouterr().err
    assert (out / "report.json").exists() and (out / "model.pth").exists()
