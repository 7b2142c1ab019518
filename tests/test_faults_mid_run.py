"""Through faults in the middle of a run: non-finite losses (one line naming the epoch and step,
or skipped with --skip-nonfinite), a Comet server that fails mid-run, and a full disk while writing
a checkpoint or a CSV row (one line, then --resume finishes the run)."""
import csv
import errno
import io
import json
import os
import re
import sys
import types

import pytest
import torch

import build
import main as cli
from conftest import TINY, make_image_folder
from fault_helpers import _epochs_in_csv, _tmp_files


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- non-finite loss

def _tiny_run(data, out, *extra):
    return [str(a) for a in ["--dataset", "folder", "--data-dir", data, "--output-dir", out, *TINY,
                             "--input-path", "device", *extra]]


def test_diverging_run_stops_with_one_line_naming_the_epoch_and_keeps_the_last_checkpoint(tmp_path, capsys):
    """SGD at lr 10 (warm-up over 4 epochs) blows up after an epoch or two: exit 2, one line that
    names the epoch and step, and the last finished epoch's checkpoint loads, with finite weights."""
    data = make_image_folder(str(tmp_path / "data"), n_train=10, n_test=4)
    out = tmp_path / "run"
    code = cli.cli(_tiny_run(data, out, "--max-epochs", 6, "--optimizer", "sgd", "--lr", 10, "--min-lr", 0,
                             "--warmup-epoch", 4))
    captured = capsys.readouterr()
    assert code == 2, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "non-finite loss" in lines[0], captured.err
    done = _epochs_in_csv(out / "metrics.csv")
    assert len(done) >= 1, "the loss must blow up after the first epoch for this test to mean anything"
    m = re.search(r"epoch (\d+), step (\d+)", lines[0])
    assert m, lines[0]
    # The epoch after the last row; whether counted from 0 or 1 is test_injected_nan_names_epoch_and_step's.
    assert int(m.group(1)) in (done[-1], done[-1] + 1), f"{lines[0]!r}, but the log's last finished epoch is {done[-1]}"
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ckpt["epoch"] + 1 == done[-1]
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert not (out / "model.pth").exists()


class _NaNAt:
    """A criterion wrapper that returns NaN at chosen training calls (1-based, counted over the run)."""

    def __init__(self, monkeypatch, bad_calls):
        self.calls, self.bad = 0, set(bad_calls)
        real_build = build.CRITERIONS.build

        def build_criterion(*a, **k):
            criterion = real_build(*a, **k)

            def wrapped(logits, target):
                loss = criterion(logits, target)
                if torch.is_grad_enabled():  # training, not evaluation
                    self.calls += 1
                    if self.calls in self.bad:
                        return loss * float("nan")
                return loss
            return wrapped
        monkeypatch.setattr(build.CRITERIONS, "build", build_criterion)


def test_injected_nan_names_epoch_and_step(tmp_path, monkeypatch, capsys):
    data = make_image_folder(str(tmp_path / "data"), n_train=12, n_test=2)  # 48 images, 3 steps of 16 an epoch
    _NaNAt(monkeypatch, {5})  # epoch 2, its second step
    out = tmp_path / "run"
    code = cli.cli(_tiny_run(data, out, "--max-epochs", 3))
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    m = re.search(r"epoch (\d+), step (\d+)", err)
    assert m and int(m.group(1)) == 2, f"the NaN was in epoch 2 (as metrics.csv numbers it): {err!r}"
    assert int(m.group(2)) in (1, 2), err  # the epoch's second step, counted from 0 or from 1
    assert torch.load(out / "checkpoint.pt", weights_only=False)["epoch"] == 0
    assert _epochs_in_csv(out / "metrics.csv") == [1]


def test_skip_nonfinite_counts_skipped_steps_and_finishes(tmp_path, monkeypatch):
    data = make_image_folder(str(tmp_path / "data"), n_train=12, n_test=2)  # 48 images, 3 steps of 16 an epoch
    _NaNAt(monkeypatch, {5, 9})  # epoch 2 step 2, epoch 3 step 3
    out = tmp_path / "run"
    assert cli.cli(_tiny_run(data, out, "--max-epochs", 4, "--skip-nonfinite")) == 0
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["skipped_steps"]) for r in rows] == [0, 1, 1, 0]
    # A skipped step's images are not counted as trained on.
    assert [int(r["train_images"]) for r in rows] == [48, 48 - 16, 48 - 16, 48]
    assert all(torch.isfinite(v).all() for v in torch.load(out / "model.pth").values())


def test_skip_nonfinite_on_a_diverging_run_finishes(tmp_path):
    data = make_image_folder(str(tmp_path / "data"), n_train=10, n_test=2)
    out = tmp_path / "run"
    code = cli.cli(_tiny_run(data, out, "--max-epochs", 6, "--optimizer", "sgd", "--lr", 10, "--min-lr", 0,
                             "--warmup-epoch", 4, "--skip-nonfinite"))
    assert code == 0
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and sum(int(r["skipped_steps"]) for r in rows) > 0
    assert (out / "model.pth").exists()


# ---------------------------------------------------------------- Comet fails mid-run

def test_comet_log_metrics_failing_is_one_warning_and_training_goes_on(tmp_path, monkeypatch, capsys):
    calls = []

    class Experiment:
        def __init__(self, **kwargs):
            calls.append("init")

        def __getattr__(self, name):  # set_name, log_parameters, log_image, log_asset, end
            return lambda *a, **k: calls.append(name)

        def log_metrics(self, *a, **k):
            calls.append("log_metrics")
            raise ConnectionError("Failed to connect to https://www.comet.com/clientlib/ (timed out)")

    fake = types.ModuleType("comet_ml")
    fake.Experiment = fake.OfflineExperiment = Experiment
    monkeypatch.setitem(sys.modules, "comet_ml", fake)
    data = make_image_folder(str(tmp_path / "data"), n_train=4, n_test=2)
    out = tmp_path / "run"
    code = cli.cli(_tiny_run(data, out, "--max-epochs", 3, "--api-key", "key"))
    err = capsys.readouterr().err
    assert code == 0, err
    warnings = [l for l in err.splitlines() if l.startswith("warning:")]
    assert len(warnings) == 1 and "Comet is off" in warnings[0] and "ConnectionError" in warnings[0], err
    assert "Traceback" not in err
    assert calls.count("log_metrics") == 1, calls  # switched off after the first failure
    assert calls[calls.index("log_metrics") + 1:] == [], calls
    assert _epochs_in_csv(out / "metrics.csv") == [1, 2, 3]
    assert (out / "model.pth").exists()


def test_a_run_without_matplotlib_finishes_with_its_report_and_one_warning(tmp_path, monkeypatch, capsys):
    """matplotlib is optional (a bare GPU image may lack it): the run ends with exit 0, its
    weights, CSV and report.json, and one warning instead of the pictures."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    monkeypatch.delitem(sys.modules, "plot", raising=False)
    data = make_image_folder(str(tmp_path / "data"), n_train=4, n_test=2)
    out = tmp_path / "run"
    code = cli.cli(_tiny_run(data, out, "--max-epochs", 1))
    err = capsys.readouterr().err
    assert code == 0, err
    warnings = [l for l in err.splitlines() if l.startswith("warning:")]
    assert len(warnings) == 1 and "no pictures" in warnings[0], err
    assert (out / "report.json").exists() and (out / "model.pth").exists()
    assert not (out / "confusion.png").exists()


# ---------------------------------------------------------------- a full disk

ENOSPC = OSError(errno.ENOSPC, "No space left on device")


def _assert_one_line_no_space(code, err):
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0], err
    assert "Traceback" not in err


def test_disk_full_while_writing_the_epoch_2_checkpoint(tmp_path, monkeypatch, capsys):
    data = make_image_folder(str(tmp_path / "data"), n_train=4, n_test=2)
    out = tmp_path / "run"
    real_save = torch.save

    def save(obj, f, *a, **k):
        if isinstance(obj, dict) and obj.get("epoch") == 1:  # epoch 2's checkpoint
            buf = io.BytesIO()
            real_save(obj, buf)
            f.write(buf.getvalue()[:4096])  # the disk fills up part way through
            raise ENOSPC
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save)
    argv = _tiny_run(data, out, "--max-epochs", 3)
    code = cli.cli(argv)
    _assert_one_line_no_space(code, capsys.readouterr().err)
    monkeypatch.undo()
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ckpt["epoch"] == 0 and len(ckpt["history"]) == 1
    assert _epochs_in_csv(out / "metrics.csv") == [1]
    json.loads((out / "config.json").read_text())
    assert not _tmp_files(out) and not (out / "model.pth").exists()
    # Space is back: --resume finishes the run.
    assert cli.cli(argv + ["--resume"]) == 0
    assert _epochs_in_csv(out / "metrics.csv") == [1, 2, 3]


def test_disk_full_while_appending_the_epoch_2_csv_row(tmp_path, monkeypatch, capsys):
    import loggers
    data = make_image_folder(str(tmp_path / "data"), n_train=4, n_test=2)
    out = tmp_path / "run"

    class FillingFile:
        """The real file, except that the epoch-2 row gets half written before the disk is full."""

        def __init__(self, f):
            self.f = f

        def write(self, s):
            if s.startswith("2,"):
                self.f.write(s[: len(s) // 2])
                raise ENOSPC
            return self.f.write(s)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

    def filling_open(path, *a, **k):
        f = open(path, *a, **k)
        return FillingFile(f) if os.path.basename(path) == "metrics.csv" else f

    monkeypatch.setattr(loggers, "open", filling_open, raising=False)
    argv = _tiny_run(data, out, "--max-epochs", 3)
    code = cli.cli(argv)
    _assert_one_line_no_space(code, capsys.readouterr().err)
    monkeypatch.undo()
    assert torch.load(out / "checkpoint.pt", weights_only=False)["epoch"] == 1
    # The log still reads as whole rows: epoch 1's, and no torn half of epoch 2's.
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1"], rows
    assert all(None not in r.values() and None not in r for r in rows)
    # Space is back: --resume finishes the run and the log is whole.
    assert cli.cli(argv + ["--resume"]) == 0
    assert _epochs_in_csv(out / "metrics.csv") == [1, 2, 3]
