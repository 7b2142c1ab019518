"""On a CUDA GPU only (skipped elsewhere): what the CPU cannot check. tools/gpu_check.py runs
this file as one of its items, so a lent GPU answers it in its first call.

- `--compile graphs` (the step captured once in a CUDA graph and replayed, with the capturable
  fused Adam) trains what the eager loop trains: the same weights, EMA, Adam moments, sums and
  rates after six steps over two epochs, for the same flag sets the CPU checks the fused body
  with (tests/test_fused_step.py), random mixing inside the graph included, whether the graph
  zeroes its gradients (main.py's way) or is captured without them (`bench.py --graph-grads fresh`);
- through main.py, three epochs of `--compile graphs` log what `--compile off` logs;
- the compiled crop and flip draw what eager draws (Triton here, not the CPU's C++)."""
import pytest
import torch

from test_audit import check_compiled_crop_and_flip_draw_what_eager_draws
from test_fused_step import FLAGS, check_fused_trains_what_train_step_trains, check_main_matches_eager

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("grads", ["zeroed", "fresh"])
@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: "-".join(a.strip("-") for a in f[:3]) or "seed-recipe")
def test_a_captured_step_trains_what_train_step_trains(flags, grads):
    check_fused_trains_what_train_step_trains(flags, device="cuda", mode="graphs", fresh_grads=grads == "fresh")


def test_compile_graphs_through_main_matches_eager(tmp_path):
    # 1e-4: the compiled model's kernels round differently from eager's (cuDNN may also pick
    # another convolution algorithm); a wrong rate or a lost step moves these by far more.
    # This run also compiles the crop and flip: if the test above passes and this one differs
    # already in epoch 1 (lr 0: only the inputs can differ), the compiled draws are out of order
    # on this torch (the next test).
    check_main_matches_eager(tmp_path, "graphs", device="cuda", tol=1e-4)


def test_compiled_crop_and_flip_draw_what_eager_draws_on_cuda():
    check_compiled_crop_and_flip_draw_what_eager_draws("cuda")
