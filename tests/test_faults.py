"""Through faults: kill -9 at chosen and at random moments then --resume (bit-identical weights
on the CPU), torn checkpoint writes, unreadable checkpoints, non-finite losses, a Comet server
that fails mid-run, and a full disk.

The kill tests run main.cli in processes forked from a fork server (ZYGOTE below) whose
wrappers can park a run at a named moment -- in the middle of a training step, inside
evaluation, half way through writing a checkpoint, between a checkpoint and its CSV row, half
way through writing model.pth -- so that the SIGKILL lands exactly there.
"""
import csv
import errno
import hashlib
import io
import json
import os
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import types

import pytest
import torch

import build
import main as cli
from conftest import ROOT, TINY, make_image_folder

EPOCHS = 4


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- helpers

# A fork server for the kill tests. Importing main.py costs about 5 CPU-seconds (torch,
# torchvision) and a kill test needs about ten processes, so one process imports everything
# once and forks a fresh child per run. Each child is a real process that runs main.cli from
# a just-imported state and dies by a real SIGKILL. The wrappers below only watch; they never
# change what they wrap computes, so a resumed run must end with the same bits as a straight one.
ZYGOTE = textwrap.dedent(r'''
    import io, json, os, sys, time, traceback
    sys.path.insert(0, os.environ["HOOK_ROOT"])
    import torch
    import loggers
    import main
    import train

    state = {"epoch": None}


    def env(name, default=""):
        return os.environ.get(name, default)


    def park(where):
        """Tell the test where we are, then wait for its SIGKILL."""
        with open(env("KILL_MARKER") + ".tmp", "w") as f:
            f.write(where)
        os.replace(env("KILL_MARKER") + ".tmp", env("KILL_MARKER"))
        while True:
            time.sleep(1)


    def wanted(phase, epoch):  # KILL_EPOCH is 0-based, as main.py's loop counts
        return env("KILL_PHASE") == phase and epoch == int(env("KILL_EPOCH", "-1"))


    real_train, real_evaluate, real_save, real_log = train.train_one_epoch, train.evaluate, torch.save, loggers.CSVLogger.log


    def train_one_epoch(net, loader, criterion, optimizer, scheduler, device, epoch, **kw):
        state["epoch"] = epoch
        first_step = scheduler.last_epoch

        def crit(*a, **k):
            # One whole optimizer step of this epoch is done; this is the forward of the next one.
            if wanted("train", epoch) and scheduler.last_epoch == first_step + 1:
                park("train")
            # Signal (without stopping) once the run has made KILL_AFTER_STEPS optimizer steps in all.
            if scheduler.last_epoch >= int(env("KILL_AFTER_STEPS", "1000000")) and not state.get("signalled"):
                state["signalled"] = True
                open(env("KILL_MARKER"), "w").close()
            return criterion(*a, **k)
        return real_train(net, loader, crit, optimizer, scheduler, device, epoch, **kw)


    def evaluate(model, loader, criterion, *a, **kw):
        def crit(*ca, **ck):
            if wanted("eval", state["epoch"]):
                park("eval")
            return criterion(*ca, **ck)
        return real_evaluate(model, loader, crit, *a, **kw)


    def save(obj, f, *a, **kw):
        is_ckpt = isinstance(obj, dict) and "optimizer" in obj
        if (is_ckpt and wanted("ckpt", obj["epoch"])) or (not is_ckpt and env("KILL_PHASE") == "final"):
            buf = io.BytesIO()
            real_save(obj, buf, *a, **kw)
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])  # half of the file is on disk
            f.flush()
            os.fsync(f.fileno())
            park(env("KILL_PHASE"))
        return real_save(obj, f, *a, **kw)


    def log(self, row):
        if wanted("csv", row["epoch"] - 1):  # the checkpoint is written, its CSV row not yet
            park("csv")
        return real_log(self, row)


    train.train_one_epoch, train.evaluate, torch.save, loggers.CSVLogger.log = train_one_epoch, evaluate, save, log

    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "run":
            pid = os.fork()
            if pid == 0:  # the run
                code = 1
                try:
                    os.environ.update(cmd["env"])
                    fd = os.open(cmd["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                    os.dup2(fd, 1)
                    os.dup2(fd, 2)
                    code = main.cli(cmd["argv"])
                except SystemExit as e:
                    code = e.code
                except BaseException:
                    traceback.print_exc()
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code if isinstance(code, int) else 1)
            reply = {"pid": pid}
        else:  # poll
            pid, status = os.waitpid(cmd["pid"], os.WNOHANG)
            reply = {"exit": os.waitstatus_to_exitcode(status) if pid else None}
        print(json.dumps(reply), flush=True)
''')


class Zygote:
    def __init__(self, folder):
        script = os.path.join(folder, "zygote.py")
        with open(script, "w") as f:
            f.write(ZYGOTE)
        self.proc = subprocess.Popen([sys.executable, script], cwd=ROOT, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=_env())
        self.folder, self.runs = folder, []

    def _ask(self, **cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the fork server died (exit {self.proc.poll()})"
        return json.loads(line)

    def start(self, argv, **env):
        log = os.path.join(self.folder, f"run-{len(self.runs)}.log")
        run = types.SimpleNamespace(pid=None, log=log, exit=None)
        run.pid = self._ask(op="run", argv=[str(a) for a in argv], env={k: str(v) for k, v in env.items()},
                            log=log)["pid"]
        self.runs.append(run)
        return run

    def poll(self, run):
        if run.exit is None:
            run.exit = self._ask(op="poll", pid=run.pid)["exit"]
        return run.exit

    def output(self, run):
        with open(run.log) as f:
            return f.read()[-3000:]

    def wait(self, run, timeout=180):
        deadline = time.time() + timeout
        while (code := self.poll(run)) is None:
            assert time.time() < deadline, f"run {run.pid} did not finish"
            time.sleep(0.05)
        return code

    def wait_for(self, path, run, timeout=180):
        """Until `path` exists; fails if the run ends first."""
        deadline = time.time() + timeout
        while not os.path.exists(path):
            code = self.poll(run)
            if code is not None:
                pytest.fail(f"the run ended (exit {code}) before {os.path.basename(path)}:\n{self.output(run)}")
            if time.time() > deadline:
                self.kill(run)
                pytest.fail(f"timed out waiting for {path}")
            time.sleep(0.02)

    def kill(self, run):
        """SIGKILL; the exit status (0 if the run had just finished by itself)."""
        if run.exit is None:  # once poll has reaped it, the pid may belong to someone else
            try:
                os.kill(run.pid, signal.SIGKILL)  # not reused before poll reaps it
            except ProcessLookupError:  # a race with the run's own end
                pass
        return self.wait(run)

    def close(self):
        for run in self.runs:  # none left parked, whatever failed
            if self.poll(run) is None:
                self.kill(run)
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _env(**extra):
    # One thread: fast on a shared CPU, and the same thread count in every run we compare.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HOOK_ROOT": ROOT,
            **{k: str(v) for k, v in extra.items()}}


def _run_args(data, out):
    # EMA, dropout, cutmix, randaugment and label smoothing: every piece of state a resume must restore.
    return ["--dataset", "folder", "--data-dir", data, "--output-dir", out, "--max-epochs", EPOCHS, *TINY,
            "--input-path", "device", "--dropout", "0.1", "--cutmix", "--randaugment", "--label-smoothing",
            "--ema-decay", "0.5", "--seed", "3"]


def _epochs_in_csv(path):
    with open(path, newline="") as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


def _assert_same_weights(a_path, b_path):
    a, b = torch.load(a_path), torch.load(b_path)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors differ from the uninterrupted run: {different[:5]}"


def _tmp_files(folder):
    return [n for n in os.listdir(folder) if n.startswith(".tmp-")]


# ---------------------------------------------------------------- kill -9, then --resume

@pytest.fixture(scope="module")
def kills(tmp_path_factory):
    """The data, the fork server, and the uninterrupted run (in this process, on one thread:
    the same bits as a process with OMP_NUM_THREADS=1) that the killed runs must end up equal to."""
    base = tmp_path_factory.mktemp("faults")
    data = make_image_folder(str(base / "data"), n_train=10, n_test=4)  # 40 train images
    zygote = Zygote(str(base))  # imports in the background while the straight run trains
    torch.set_num_threads(1)
    cli.main(cli.get_args_parser().parse_args([str(a) for a in _run_args(data, base / "straight")]))
    yield types.SimpleNamespace(base=base, data=data, zygote=zygote, straight=base / "straight")
    zygote.close()


def _assert_like_straight(straight, out):
    _assert_same_weights(straight / "model.pth", out / "model.pth")
    # The log is whole again: one row per epoch, the same numbers as the straight run.
    with open(straight / "metrics.csv") as f:
        want = list(csv.DictReader(f))
    with open(out / "metrics.csv") as f:
        got = list(csv.DictReader(f))
    assert [r["epoch"] for r in got] == [str(e) for e in range(1, EPOCHS + 1)]
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "lr"):
        assert [r[key] for r in got] == [r[key] for r in want], (key, [r[key] for r in got], [r[key] for r in want])


@pytest.mark.slow
def test_kill_at_each_moment_then_resume_gives_identical_weights(kills, tmp_path):
    """SIGKILL mid training step, mid evaluation, mid checkpoint write, between a checkpoint and
    its CSV row, and mid model.pth write; each time --resume, until the run finishes."""
    z, out = kills.zygote, tmp_path / "run"
    ckpt = out / "checkpoint.pt"
    argv = _run_args(kills.data, out)
    # (phase, 0-based epoch, what must be on disk at the moment of the kill)
    plan = [("train", 1, dict(ckpt_epoch=0, csv=[1])),
            ("eval", 2, dict(ckpt_epoch=1, csv=[1, 2])),
            ("ckpt", 2, dict(ckpt_epoch=1, csv=[1, 2], torn="checkpoint.pt")),
            ("csv", 3, dict(ckpt_epoch=3, csv=[1, 2, 3])),
            ("final", 0, dict(ckpt_epoch=3, csv=[1, 2, 3, 4], torn="model.pth"))]
    for i, (phase, epoch, expect) in enumerate(plan):
        marker = str(tmp_path / f"parked-{i}")
        run = z.start(argv + (["--resume"] if i else []), KILL_MARKER=marker, KILL_PHASE=phase, KILL_EPOCH=epoch)
        z.wait_for(marker, run)
        assert z.kill(run) == -signal.SIGKILL
        assert open(marker).read() == phase
        # What a kill at this moment leaves: the last finished epoch's checkpoint, readable.
        saved = torch.load(ckpt, weights_only=False)
        assert saved["epoch"] == expect["ckpt_epoch"], (phase, saved["epoch"])
        assert len(saved["history"]) == expect["ckpt_epoch"] + 1
        assert _epochs_in_csv(out / "metrics.csv") == expect["csv"], phase
        if expect.get("torn"):  # the half-written file is a temp file, never the real one
            assert any(n.endswith(expect["torn"]) for n in _tmp_files(out)), os.listdir(out)
        assert not (out / "model.pth").exists()
    run = z.start(argv + ["--resume"], KILL_MARKER=tmp_path / "never")
    assert z.wait(run) == 0, z.output(run)
    _assert_like_straight(kills.straight, out)


@pytest.mark.slow
def test_kill_at_random_moments_then_resume_gives_identical_weights(kills, tmp_path):
    """Four SIGKILLs at seeded random moments, each followed by --resume (or a fresh start when no
    checkpoint was written yet), then a run to the end. A moment is one or two optimizer steps
    after the step the run resumes from (the run keeps going when it gets there) plus a random
    pause of up to half an epoch of the straight run, which reaches into the steps, the
    evaluations and the checkpoint writes around it. Moments count from where each run resumes,
    so that a fast machine cannot run past all of them; a run that still gets to its end before
    its kill is rewound (its folder restored) and killed again after a shorter pause."""
    z, out = kills.zygote, tmp_path / "run"
    argv = _run_args(kills.data, out)
    # The device path drops the last partial batch: 40 images at batch 16 make 2 steps an epoch.
    total = torch.load(kills.straight / "checkpoint.pt", weights_only=False)["scheduler"]["last_epoch"]
    steps_per_epoch = total // EPOCHS
    with open(kills.straight / "metrics.csv") as f:
        epoch_seconds = sorted(float(r["epoch_seconds"]) for r in csv.DictReader(f))[EPOCHS // 2]
    rng = random.Random(20240501)
    landed, rewound, snapshot = 0, 0, tmp_path / "before"
    while landed < 4:
        ckpt = out / "checkpoint.pt"
        done = (torch.load(ckpt, weights_only=False)["epoch"] + 1) * steps_per_epoch if ckpt.exists() else 0
        if done == total:  # only the final evaluation and writes are left: no step to kill at
            break
        step, pause = done + rng.randint(1, 2), rng.uniform(0, 0.5) * epoch_seconds
        shutil.rmtree(snapshot, ignore_errors=True)
        if out.exists():
            shutil.copytree(out, snapshot)
        while True:
            marker = tmp_path / f"m{landed}-{rewound}"
            run = z.start(argv + (["--resume"] if ckpt.exists() else []), KILL_MARKER=marker, KILL_AFTER_STEPS=step)
            z.wait_for(marker, run)
            time.sleep(pause)
            code = z.kill(run)
            if code == -signal.SIGKILL:
                break
            assert code == 0, z.output(run)
            rewound, pause = rewound + 1, pause / 4  # the run finished first: rewind and kill sooner
            assert rewound < 20, "the runs keep finishing before their kill"
            shutil.rmtree(out)
            if snapshot.exists():
                shutil.copytree(snapshot, out)
        landed += 1
        if ckpt.exists():  # whatever the moment, the checkpoint on disk is whole
            torch.load(ckpt, weights_only=False)
    print(f"{landed} kills landed, {rewound} runs rewound after finishing first")
    assert landed >= 3, f"only {landed} kills landed before the run's last checkpoint"
    run = z.start(argv + (["--resume"] if (out / "checkpoint.pt").exists() else []), KILL_MARKER=tmp_path / "m")
    assert z.wait(run) == 0, z.output(run)
    _assert_like_straight(kills.straight, out)


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
