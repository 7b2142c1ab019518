"""The model registry: every name `--model-name` accepts, mapped to its builder.

Each builder is `fn(num_classes, image_size, in_chans, *, dropout, drop_path, **options)` and
ignores options that are not its own; the sizes live next to each model (vit.PRESETS, and the
MODELS tables of vit_zoo.py and cnn.py).

    python models.py        # prints README's model table: parameters and FLOPs per image
"""
import functools

import cnn
import vit
import vit_zoo
from utils import Registry

MODELS = Registry("model")
for _preset in vit.PRESETS:
    MODELS.register(_preset, functools.partial(vit.build_vit, preset=_preset))
MODELS.update(vit_zoo.MODELS)
MODELS.update(cnn.MODELS)


def model_names():
    return MODELS.names()


def build_model(name, num_classes, image_size, in_chans, **options):
    return MODELS.build(name, num_classes, image_size, in_chans, **options)


def model_table(num_classes=10, image_size=32):
    """Markdown rows: name, parameters, forward GFLOP per image (attention as matrix products)."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    rows = ["| name | parameters | GFLOP / image (forward) | train it |", "| --- | ---: | ---: | --- |"]
    for name in MODELS.names():
        model = build_model(name, num_classes, image_size, 3).eval()
        # Under no_grad the counter's module tracker trips over class-attention blocks (CaiT).
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model(torch.randn(1, 3, image_size, image_size))
        params = sum(p.numel() for p in model.parameters())
        rows.append(f"| `{name}` | {params / 1e6:.2f}M | {counter.get_total_flops() / 1e9:.3f} | "
                    f"`python main.py --model-name {name}` |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(model_table())
