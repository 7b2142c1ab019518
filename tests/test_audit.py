"""The device path never makes the host wait: counted on the meta device (sync_audit.py), and
the one-command GPU check runs end to end on the CPU with tiny sizes."""
import json
import os
import subprocess
import sys

import pytest
import torch

import bench
import sync_audit
from conftest import ROOT, make_image_folder

SMALL = ["--num-layers", "1", "--hidden", "32", "--mlp-hidden", "32", "--head", "2"]


def audit(*flags):
    return bench.audit_device_path(bench.get_args_parser().parse_args([*SMALL, *flags]))


def test_the_counter_sees_what_makes_a_host_wait():
    def waits():
        t = torch.zeros(4, device="meta")
        int(t[0]), t.tolist()
        torch.arange(3).to("meta")
        torch.tensor([1.0, 2.0], device="meta")
        return t + 1

    _, c = sync_audit.count(waits)
    assert (c["ops"], c["syncs"], c["blocking_copies"]) == (4, 2, 2)


@pytest.mark.parametrize("flags", [[], ["--autoaugment"], ["--autoaugment", "--aa-ops", "torchvision"],
                                   ["--randaugment"], ["--trivialaugment"],
                                   ["--autoaugment", "--mixup", "--cutmix", "--rcpaste", "--cutout", "8",
                                    "--random-erasing", "0.25", "--ema-decay", "0.99", "--grad-clip", "1"],
                                   ["--mixup", "--cutmix", "--mix-choice", "random"],
                                   ["--crop", "timm_rrc", "--policy", "timm_randaugment"],
                                   ["--random-erasing", "0.25", "--erasing-style", "zhong"],
                                   ["--policy", "k47_randaugment", "--ra-m", "14"]],
                         ids=lambda f: "-".join(a.strip("-") for a in f) or "none")
def test_no_syncs_and_no_blocking_copies_per_step(flags):
    r = audit("--batch-size", "8", *flags)
    assert r["syncs_per_step"] == 0 and r["blocking_copies_per_step"] == 0, r
    assert r["aug_syncs_per_batch"] == 0 and r["aug_blocking_copies_per_batch"] == 0, r
    assert r["step_syncs"] == 0 and r["step_blocking_copies"] == 0, r
    # The body --compile step compiles and --compile graphs captures (a capture fails on any sync).
    assert r["fused_step_syncs"] == 0 and r["fused_step_blocking_copies"] == 0, r


@pytest.mark.slow
@pytest.mark.parametrize("policy", [["--autoaugment"], ["--randaugment"], ["--trivialaugment"],
                                    ["--crop", "timm_rrc", "--policy", "timm_randaugment"],
                                    ["--policy", "k47_randaugment"]],
                         ids=lambda f: "-".join(a.strip("-") for a in f))
def test_augmentation_op_count_does_not_grow_with_the_batch(policy):
    small, large = audit("--batch-size", "8", *policy), audit("--batch-size", "256", *policy)
    assert small["aug_ops_per_batch"] == large["aug_ops_per_batch"]
    assert small["ops_per_step"] == large["ops_per_step"]


@pytest.mark.slow
def test_audit_cli_writes_json(tmp_path):
    out = tmp_path / "audit.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench.py"), "--audit", *SMALL, "--batch-size", "8",
                           "--autoaugment", "--json", str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert {"syncs_per_step", "blocking_copies_per_step", "aug_ops_per_batch", "step_ops"} <= r.keys()
    assert "syncs_per_step" in proc.stdout


@pytest.mark.slow
def test_gpu_check_dry_run_on_the_cpu(tmp_path):
    data = make_image_folder(str(tmp_path / "data"), n_train=16, n_test=4)
    out = tmp_path / "check"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gpu_check.py"), "--tiny", "--device", "cpu",
                           "--out", str(out), "--batches", "8", "--compile-modes", "", "--pipeline-compile", "off", "--workers", "0",
                           "--policies", "trivialaugment",  # each policy's compile is tested on its own
                           "--steps", "2", "--data-dir", data, "--epochs", "2", "--run-compile", "auto"],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads((out / "gpu_check.json").read_text())
    # One batch size: each item is a process of its own, and a second size adds only more of the same.
    for key in ("step_b8_compile_off", "augmentation_alone_b8", "pipeline_none_b8_compile_off",
                "pipeline_autoaugment_b8_compile_off", "workers_0_b8", "run_epochs", "cuda_tests", "launch_cost",
                "profile_b8_compile_off"):
        assert key in r and "error" not in r[key], (key, r.get(key))
    assert r["step_b8_compile_off"]["train_images_per_second"] > 0
    profile = r["profile_b8_compile_off"]["step_profile"]
    assert profile["profiled_steps"] == 20 and profile["wall_us_per_step"] > 0, profile
    assert 0 < r["launch_cost"]["eager_us_per_launch"] < 1e4 and "graph_us_per_kernel" not in r["launch_cost"]
    assert set(r["augmentation_alone_b8"]) == {"trivialaugment_eager", "trivialaugment_compiled", "item_seconds"}
    assert r["run_epochs"]["exit_code"] == 0 and len(r["run_epochs"]["epoch_seconds"]) == 2
    # On the CPU the GPU's own tests are collected and skipped, not failed.
    assert r["cuda_tests"]["exit_code"] == 0 and "skipped" in r["cuda_tests"]["summary"], r["cuda_tests"]
    assert "finished" in r


def test_gpu_check_plans_the_captured_step_profiles_on_cuda(tmp_path):
    """On a GPU the captured step is profiled both ways of keeping its gradients right after the
    real runs, and with inductor's max-autotune, in its own environment, last."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import gpu_check
    args = gpu_check.get_args_parser().parse_args(["--out", str(tmp_path), "--data-dir", str(tmp_path)])
    items = gpu_check.plan(args)
    keys = [item[0] for item in items]
    runs = keys.index("run_epochs_compile_graphs")
    assert keys[runs + 1:runs + 3] == ["profile_b128_compile_graphs_zeroed_grads", "profile_b128_compile_graphs_fresh_grads"]
    last = items[-1]
    assert last[0] == "profile_b128_compile_graphs_zeroed_grads_max_autotune"
    assert last[4] == {"TORCHINDUCTOR_MAX_AUTOTUNE": "1"} and "--graph-grads" in last[2][1]
    assert all(item[4] is None for item in items[:-1])


@pytest.mark.slow
def test_gpu_check_starts_no_item_once_its_budget_is_spent(tmp_path):
    """A lent GPU's minutes are counted: with --budget-s spent, every item is recorded as
    skipped (none started), and the JSON is still written and finished."""
    out = tmp_path / "check"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gpu_check.py"), "--tiny", "--device", "cpu",
                           "--out", str(out), "--budget-s", "5", "--batches", "8", "--compile-modes", "",
                           "--pipeline-compile", "off", "--workers", "0"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads((out / "gpu_check.json").read_text())
    items = [k for k in r if k.startswith(("step_", "pipeline_", "augmentation_", "workers_"))]
    assert len(items) == 5 and all("skipped" in r[k]["error"] for k in items), r
    assert "skipped" in r["cuda_tests"]["error"] and "skipped" in r["launch_cost"]["error"]
    assert r["budget_seconds"] == 5 and "finished" in r


def check_compiled_crop_and_flip_draw_what_eager_draws(device="cpu"):
    """Under --compile (build.compiles' inductor settings) the device path's crop and flip give
    the eager batches exactly: each random op gets the numbers it gets eagerly, in program order
    (torch 2.11's inductor swapped the crop's and the flip's draws until build.compiles kept the
    order; the GPU machine runs 2.11). tests/test_cuda.py runs it on a GPU."""
    import types

    import build
    from loaders import DeviceSource

    device = torch.device(device)
    assert build.compiles(types.SimpleNamespace(compile="on"), device)
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x, y = x.to(device), torch.arange(64, device=device)
    runs = []
    for compiled in (False, True):
        src = DeviceSource(x, y, 16, 4, True, None, device, compile_augment=compiled)
        torch.manual_seed(3)
        src.set_epoch(0, 0)
        runs.append(torch.cat([b for b, _ in src]))
    assert src._compiled, "compiling fell back to eager"
    assert torch.equal(runs[0], runs[1]), (runs[0] != runs[1]).sum()


@pytest.mark.slow
def test_compiled_crop_and_flip_draw_what_eager_draws(one_thread):
    check_compiled_crop_and_flip_draw_what_eager_draws()


@pytest.mark.slow
def test_compiled_augmentation_runs_and_keeps_the_batch(one_thread):
    """--compile on the device path also compiles crop + flip + policy (fullgraph, static shapes);
    its random draws differ from eager (inductor's RNG), its output is a batch of the same kind."""
    from augment import build_policy
    from loaders import DeviceSource

    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(64)
    _, policy = build_policy("autoaugment")
    src = DeviceSource(x, y, 16, 4, True, policy, torch.device("cpu"), compile_augment=True)
    src.set_epoch(0, 0)
    batches = list(src)
    assert src._compiled, "compiling fell back to eager"
    assert len(batches) == 4 and all(b.shape == (16, 3, 32, 32) and b.dtype == torch.uint8 for b, _ in batches)
    eager = DeviceSource(x, y, 16, 4, True, policy, torch.device("cpu"))
    eager.set_epoch(0, 0)
    mean = lambda bs: torch.cat([b for b, _ in bs]).float().mean()  # noqa: E731
    assert abs(mean(batches) - mean(list(eager))) < 12  # the same augmentation, other draws
