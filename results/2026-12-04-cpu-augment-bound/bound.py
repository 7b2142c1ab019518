"""How fast the fixed-op-count AutoAugment (original ops, CIFAR-10 policy) could be on this CPU at
best, against the issue's target (3x the old per-group code at batch 512), in one run.

The new kernel runs every stage of a slot on every image. Whatever the arithmetic costs, each
slot has to move the batch through its indexed reads and writes: slot 1 can draw ShearY (a 4-tap
bicubic gather), slot 2 only nearest maps (a 1-tap gather), both draw Equalize (a histogram
scatter) and the lookup-table ops (a table gather). This times those primitives alone, on
tensors of the batch's shapes, and the old and new code on the same batch, each the median of
15 calls in interleaved rounds. The sum of the primitives is a floor for any eager torch-op version of the
design: if old / floor < 3, no rewrite of the arithmetic reaches the target.
Run from the repository root: python results/2026-12-04-cpu-augment-bound/bound.py
"""
import statistics
import sys
import time

import torch

sys.path.insert(0, ".")
sys.path.insert(0, "tools")
import autoaugment  # noqa: E402
from bench_augment import load_old  # noqa: E402

torch.set_num_threads(2)
B, C, HW, REPEATS = 512, 3, 1024, 15

g = torch.Generator().manual_seed(0)
x = torch.randint(0, 256, (B, C, HW), dtype=torch.uint8, generator=g)
x16, xl = x.to(torch.int16), x.long()
near = torch.randint(0, HW, (B, 1, HW), generator=g).expand(B, C, HW)
taps4 = torch.randint(0, HW, (B, 1, 4 * HW), generator=g).expand(B, C, 4 * HW)
lut = torch.randint(0, 256, (B, C, 256), dtype=torch.uint8, generator=g)
ones = torch.ones(1, 1, 1, dtype=torch.int32).expand(B, C, HW)
images = x.view(B, C, 32, 32)
old, new = load_old(), autoaugment.BatchAutoAugment("cifar10")
runs = {
    "slot 1: bicubic 4-tap gather, uint8": lambda: x.gather(2, taps4),
    "slot 1: bicubic 4-tap gather, int16": lambda: x16.gather(2, taps4),
    "slot 2: nearest gather, uint8": lambda: x.gather(2, near),
    "slot 2: nearest gather, int16": lambda: x16.gather(2, near),
    "each slot: table gather": lambda: lut.gather(2, xl),
    "each slot: histogram scatter_add": lambda: torch.zeros(B, C, 256, dtype=torch.int32).scatter_add_(2, xl, ones),
    "old": lambda: old.BatchAutoAugment("cifar10")(images, torch.Generator().manual_seed(1)),
    "new": lambda: new(images, torch.Generator().manual_seed(1)),
}
# Interleaved rounds, so that a noisy machine slows every figure alike.
ts = {name: [] for name in runs}
for r in range(REPEATS + 1):
    for name, fn in runs.items():
        start = time.perf_counter()
        fn()
        if r:
            ts[name].append(time.perf_counter() - start)
times = {name: statistics.median(v) * 1e3 for name, v in ts.items()}
old_ms, new_ms = times.pop("old"), times.pop("new")
cheapest = lambda prefix: min(t for n, t in times.items() if n.startswith(prefix))  # noqa: E731
floor = cheapest("slot 1") + cheapest("slot 2") + 2 * times["each slot: table gather"] \
    + 2 * times["each slot: histogram scatter_add"]

print(f"batch {B}, 2 threads, median of {REPEATS}, torch {torch.__version__}")
for name, t in times.items():
    print(f"  {name:42s} {t:6.2f} ms")
print(f"  {'floor: the cheaper gather per slot, x2 the rest':42s} {floor:6.2f} ms = {B / floor * 1e3:8.0f} img/s")
print(f"old (per-group) {old_ms:6.2f} ms = {B / old_ms * 1e3:8.0f} img/s; 3x target: {old_ms / 3:.2f} ms")
print(f"new (fixed ops) {new_ms:6.2f} ms = {B / new_ms * 1e3:8.0f} img/s ({old_ms / new_ms:.2f}x old)")
print(f"best any eager version of the design could do: {old_ms / floor:.2f}x old (target 3x)")
