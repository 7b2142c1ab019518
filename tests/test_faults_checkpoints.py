"""Through faults: torn checkpoint writes (a write that fails half way keeps the previous file and
leaves no temp file) and unreadable checkpoints (truncated, foreign pickles and torch files, text),
each one line on stderr with nothing in the run folder touched."""
import errno
import hashlib
import io
import os
import pickle
import shutil
import time
import types

import pytest
import torch

import main as cli
from conftest import TINY, make_image_folder


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- atomic writes

@pytest.mark.parametrize("error", [OSError(errno.EIO, "Input/output error"), KeyboardInterrupt()],
                         ids=["OSError", "KeyboardInterrupt"])
def test_a_write_that_fails_half_way_keeps_the_previous_file(tmp_path, monkeypatch, error):
    import utils
    path = tmp_path / "checkpoint.pt"
    utils.atomic_save({"epoch": 0, "model": {"w": torch.arange(1000.0)}}, str(path))
    before = path.read_bytes()
    real_save = torch.save
    written = {}

    def torn_save(obj, f, *a, **k):
        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        f.flush()
        written["bytes"] = len(buf.getvalue()) // 2
        raise error

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(type(error)):
        utils.atomic_save({"epoch": 1, "model": {"w": torch.zeros(1000)}}, str(path))
    monkeypatch.undo()
    assert written["bytes"] > 0  # the failure really came half way through a write
    assert path.read_bytes() == before
    assert torch.equal(torch.load(path)["model"]["w"], torch.arange(1000.0))
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt"], "a temp file was left behind"


# ---------------------------------------------------------------- unreadable checkpoints

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("finished")
    data = make_image_folder(str(base / "data"), n_train=4, n_test=2)
    out = base / "run"
    args = cli.get_args_parser().parse_args([str(a) for a in [
        "--dataset", "folder", "--data-dir", data, "--output-dir", out, "--max-epochs", 2, *TINY]])
    torch.set_num_threads(1)
    cli.main(args)
    return types.SimpleNamespace(data=data, out=out)


def _snapshot(folder):
    snap = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            p = os.path.join(dirpath, name)
            with open(p, "rb") as f:
                snap[os.path.relpath(p, folder)] = (hashlib.sha256(f.read()).hexdigest(), os.stat(p).st_mtime_ns)
    return snap


def _bad_file(kind, path, real_checkpoint):
    if kind == "truncated":
        blob = open(real_checkpoint, "rb").read()
        open(path, "wb").write(blob[: len(blob) // 2])
    elif kind == "foreign-pickle":
        with open(path, "wb") as f:
            pickle.dump({"hello": "world", "numbers": [1, 2, 3]}, f)
    elif kind == "foreign-torch":
        torch.save({"hello": torch.zeros(3), "epoch": 3}, path)
    elif kind == "text":
        open(path, "w").write("this is not a checkpoint\n")


@pytest.mark.parametrize("kind", ["truncated", "foreign-pickle", "foreign-torch", "text"])
@pytest.mark.parametrize("use", ["resume-path", "resume-auto", "eval-only"])
def test_unreadable_checkpoint_is_one_line_and_touches_nothing(finished_run, tmp_path, capsys, kind, use):
    run = tmp_path / "run"
    shutil.copytree(finished_run.out, run)
    if use == "resume-auto":  # the run's own checkpoint.pt is the damaged file
        bad = run / "checkpoint.pt"
        _bad_file(kind, str(tmp_path / "bad"), str(finished_run.out / "checkpoint.pt"))
        shutil.copyfile(tmp_path / "bad", bad)
    else:
        bad = run / "bad.pt"
        _bad_file(kind, str(bad), str(finished_run.out / "checkpoint.pt"))
    time.sleep(0.01)  # mtimes would differ if anything were rewritten
    before = _snapshot(run)
    common = ["--dataset", "folder", "--data-dir", finished_run.data, *TINY]
    if use == "resume-path":
        argv = common + ["--max-epochs", "2", "--output-dir", run, "--resume", bad]
    elif use == "resume-auto":
        argv = common + ["--max-epochs", "2", "--output-dir", run, "--resume"]
    else:
        # (its own --output-dir: one inside the training run is refused before the weights are read)
        argv = common + ["--eval-only", "--weights", bad, "--output-dir", tmp_path / "eval"]
    code = cli.cli([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(bad) in lines[0], err
    assert _snapshot(run) == before, "a file in the run folder was changed"
