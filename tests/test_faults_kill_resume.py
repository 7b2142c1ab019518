"""Through faults: kill -9 at chosen and at random moments then --resume (bit-identical weights
on the CPU). Torn checkpoint writes and unreadable checkpoints are in test_faults_checkpoints.py;
non-finite losses, a Comet server that fails mid-run and a full disk in test_faults_mid_run.py.

The kill tests run main.cli in processes forked from a fork server (ZYGOTE below) whose
wrappers can park a run at a named moment -- in the middle of a training step, inside
evaluation, half way through writing a checkpoint, between a checkpoint and its CSV row, half
way through writing model.pth -- so that the SIGKILL lands exactly there.
"""
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import types

import pytest
import torch

import main as cli
from conftest import ROOT, TINY, make_image_folder
from fault_helpers import _epochs_in_csv, _tmp_files

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
            if code is not None and not os.path.exists(path):  # one written just before the end counts
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


def _assert_same_weights(a_path, b_path):
    a, b = torch.load(a_path), torch.load(b_path)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors differ from the uninterrupted run: {different[:5]}"


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
        # The marker is written at the forward of a step, so a moment after the last step never
        # comes (a fresh clone's CI run resumed at the last epoch and drew two steps on): at most
        # the last step.
        step, pause = min(done + rng.randint(1, 2), total - 1), rng.uniform(0, 0.5) * epoch_seconds
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
