"""Where the batched AutoAugment (original ops, CIFAR-10 policy) spends its time on the CPU:
img/s over 10 eager calls, then torch.profiler's op table over 5 more. Run from the repository
root: python results/2026-12-04-cpu-augment-profile/profile_autoaugment.py 512"""
import sys
import time

import torch

sys.path.insert(0, ".")
import autoaugment  # noqa: E402
from torch.profiler import profile  # noqa: E402

torch.set_num_threads(2)
aa = autoaugment.BatchAutoAugment("cifar10")
B = int(sys.argv[1]) if len(sys.argv) > 1 else 512
x = torch.randint(0, 256, (B, 3, 32, 32), dtype=torch.uint8)
g = torch.Generator().manual_seed(0)
for _ in range(3):
    aa(x, g)
t = time.perf_counter()
for _ in range(10):
    aa(x, g)
print("img/s", 10 * B / (time.perf_counter() - t))
with profile() as p:
    for _ in range(5):
        aa(x, g)
print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))
