"""The model registry: every name `--model-name` accepts, mapped to its builder.

Each builder is `fn(num_classes, image_size, in_chans, *, dropout, drop_path, **options)`; the
sizes live next to the model (vit.PRESETS, and the MODELS tables of vit_zoo.py and cnn.py).
"""
import functools

import vit
from utils import Registry

MODELS = Registry("model")
for _preset in vit.PRESETS:
    MODELS.register(_preset, functools.partial(vit.build_vit, preset=_preset))


def _register_zoo():
    # Imported lazily: the zoo pulls in torchvision's model code, which `--model-name vit` never needs.
    import cnn
    import vit_zoo

    MODELS.update(vit_zoo.MODELS)
    MODELS.update(cnn.MODELS)


def model_names():
    if "cnn" not in MODELS:
        _register_zoo()
    return MODELS.names()


def build_model(name, num_classes, image_size, in_chans, **options):
    if name not in MODELS:
        model_names()
    return MODELS.build(name, num_classes, image_size, in_chans, **options)
