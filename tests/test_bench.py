"""bench.py: runs on the CPU in a tiny configuration, prints its table, writes its JSON, and
counts FLOPs exactly."""
import json

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
