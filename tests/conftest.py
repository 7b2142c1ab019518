"""Shared test fixtures: generated image folders and a way to run main.py.

The 'learnable' task: 4 classes of 32x32 noisy images, each class a different colour cast or
a bright square, so a small model gets it right quickly and a broken one cannot.
"""
import contextlib
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# Under pytest-xdist (`pytest -n 2`: README's commands) each worker is a process of its own: one
# thread each, and so for the processes it starts, or two workers' OpenMP pools fight over the
# machine's two cores and both run slower than one would alone.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch
    torch.set_num_threads(1)


def make_image_folder(root, n_train=40, n_test=12, classes=4, size=32, mode="RGB", seed=0, splits=("train", "test")):
    rng = np.random.default_rng(seed)
    for split, n in zip(splits, (n_train, n_test)):
        for c in range(classes):
            folder = os.path.join(root, split, f"class{c}")
            os.makedirs(folder, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 90, (size, size, 3)).astype(np.uint8)
                if c < 3:
                    img[:, :, c] += 130  # a colour cast
                else:
                    img[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 250  # a bright square
                pil = Image.fromarray(img)
                if mode != "RGB":
                    pil = pil.convert(mode)
                pil.save(os.path.join(folder, f"{i}.png"))
    return root


@contextlib.contextmanager
def _torch_on_one_thread():
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    """In-process runs on one thread: much faster on a small shared CPU, same code paths."""
    with _torch_on_one_thread():
        yield


@pytest.fixture(scope="module")
def one_thread_module():
    """one_thread for a whole module: at batch 1 or 2 there is little work to split, and on a busy
    2-core machine OpenMP threads spend more time waiting for each other than computing."""
    with _torch_on_one_thread():
        yield


@pytest.fixture
def image_folder(tmp_path):
    return make_image_folder(str(tmp_path / "data"))


def run_cli(*argv, timeout=300):
    """main.py in a subprocess: (exit code, stdout, stderr)."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), *map(str, argv)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    return proc.returncode, proc.stdout, proc.stderr


# Models of more than ~20M parameters: their build-and-run tests are marked slow, so the fast
# subset (pytest -m "not slow") keeps to the small ones; the full suite runs all.
LARGE_MODELS = re.compile(r"convnext|efficientnetv2|resnet(50|101|152)$|wrn|pyramidnet")


def model_params(names):
    """pytest parameters for model names, the large ones marked slow."""
    return [pytest.param(n, marks=pytest.mark.slow) if LARGE_MODELS.search(n) else n for n in names]


# Flags that make a run small enough for the CPU test budget.
TINY = ["--num-layers", "2", "--hidden", "64", "--mlp-hidden", "128", "--head", "4", "--batch-size", "16",
        "--workers", "0", "--no-progress", "--warmup-epoch", "0", "--save-every", "1"]


def gen(seed=0):
    """A CPU torch.Generator seeded with `seed`: the augmentation tests' draws."""
    import torch
    return torch.Generator().manual_seed(seed)
