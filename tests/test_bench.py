"""bench.py: runs on the CPU in a tiny configuration, prints its table, writes its JSON, and
counts FLOPs exactly."""
import json

import pytest
import torch

import bench
import vit

TINY = ["--num-layers", "1", "--hidden", "32", "--mlp-hidden", "32", "--head", "4", "--batch-size", "8",
        "--eval-batch-size", "64", "--steps", "2", "--warmup-steps", "1", "--workers", "0", "--device", "cpu"]


def test_bench_runs_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    bench.main(bench.get_args_parser().parse_args(TINY + ["--autoaugment", "--mixup", "--json", str(out)]))
    figures = json.loads(out.read_text())
    for key in ("device", "model", "batch_size", "train_images_per_second", "pipeline_images_per_second",
                "dataloader_images_per_second", "eval_images_per_second", "tflops", "peak_memory_gb"):
        assert key in figures, key
    for key in ("train_images_per_second", "pipeline_images_per_second", "dataloader_images_per_second",
                "eval_images_per_second", "tflops", "matmul_peak_tflops"):
        assert figures[key] > 0, key
    assert figures["device"] == "cpu" and figures["batch_size"] == 8 and figures["policy"] == "autoaugment"
    table = capsys.readouterr().out.strip().splitlines()
    assert table[-1].startswith("peak memory")  # the table comes last


def test_flop_count_of_the_default_vit_matches_the_formula():
    model = vit.build_vit(10)
    x, y = torch.randn(2, 3, 32, 32), torch.zeros(2, dtype=torch.long)
    train, forward = bench.count_flops(model, x, y, torch.nn.CrossEntropyLoss())
    tokens, d, mlp, layers = 65, 384, 384, 7
    macs = 64 * 48 * d  # patch embedding
    macs += layers * (tokens * d * 3 * d + tokens * d * d + 2 * tokens * d * mlp + 2 * tokens * tokens * d)
    macs += d * 10  # head, on the cls token
    assert forward == 2 * macs == 852_903_936
    # Backward costs twice the forward, less the input gradient of the first layer, which nobody needs.
    assert train == 3 * forward - 2 * (64 * 48 * d) == 2_556_352_512


def _kernel(name, ts, dur):
    return {"ph": "X", "cat": "kernel", "name": name, "ts": ts, "dur": dur}


def test_the_trace_summary_counts_busy_time_once_and_ranks_kernels():
    # Two steps on a timeline from 0 to 100 us: a 30 us matmul overlapped by a 10 us add on a
    # second stream (busy 30, not 40), a 20 us copy, then two 5 us adds after an idle gap.
    # Host events and instant events are not the device's work.
    events = [_kernel("gemm", 0, 30), _kernel("add", 20, 10),
              {"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy HtoD", "ts": 40, "dur": 20},
              _kernel("add", 90, 5), _kernel("add", 95, 5),
              {"ph": "X", "cat": "cpu_op", "name": "aten::add", "ts": 0, "dur": 500},
              {"ph": "i", "cat": "kernel", "name": "marker", "ts": 50}]
    s = bench.summarize_trace(events, steps=2, wall_seconds=300e-6, top=2)
    assert s["device_events_per_step"] == 2.5 and s["distinct_kernels"] == 3
    assert s["busy_us_per_step"] == (30 + 20 + 10) / 2  # [0, 30], [40, 60], [90, 100]
    assert s["span_us_per_step"] == 50 and s["idle_us_per_step"] == 20
    assert s["wall_us_per_step"] == 150
    assert s["top_kernels"] == [["gemm", 0.5, 15.0, 0.5], ["add", 1.5, 10.0, 20 / 60]]
    # A trace without device work (the CPU) has counts and no span.
    cpu = bench.summarize_trace(events[5:6], steps=2, wall_seconds=1e-3)
    assert cpu == {"profiled_steps": 2, "wall_us_per_step": 500.0, "device_events_per_step": 0.0}


def test_profile_steps_reports_the_step_and_fresh_grads_needs_graphs(tmp_path, capsys):
    out = tmp_path / "bench.json"
    bench.main(bench.get_args_parser().parse_args(TINY + ["--skip-dataloader", "--skip-pipeline",
                                                          "--profile-steps", "2", "--json", str(out)]))
    profile = json.loads(out.read_text())["step_profile"]
    assert profile["profiled_steps"] == 2 and profile["wall_us_per_step"] > 0
    with pytest.raises(bench.UserError, match="needs --compile graphs"):
        bench.main(bench.get_args_parser().parse_args(TINY + ["--graph-grads", "fresh"]))
