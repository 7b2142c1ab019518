"""Shared by the transformer-zoo tests (test_vit_zoo*.py): the expected parameter counts, the
small sizes, building a model by name, counting its parameters, and random weights for the
comparisons against references."""
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import models  # noqa: E402

# Parameter counts with num_classes=10, image_size=32, in_chans=3 (read off this implementation;
# the published ones are checked in test_published_param_counts).
EXPECTED_PARAMS = {
    "simple_vit": 12_444_682,
    "vit_spt_lsa": 2_729_878,
    "vit_dyt": 6_268_825,
    "cait": 11_600_650,
    "swin_t": 27_505_108,
    "mlp_mixer": 17_110_026,
    "convmixer": 594_186,
    "mobilevit_xxs": 954_234,
    "cct_7_3x1": 3_760_139,
    "vit_lite_7_4": 3_716_874,  # by formula in test_vit_lite_and_cvt_param_counts_by_formula
    "cvt_7_4": 3_716_619,
    # kentaroy47/vision-transformers-cifar10 (--patch 4 --dimhead 512): by formula in
    # test_k47_param_counts_by_formula, and equal to the references' counts below
    "k47_vit": 9_523_722,
    "k47_vit_small": 9_622_512,
    "k47_vit_tiny": 4_371_438,
    "k47_simplevit": 9_486_858,
    "k47_cait": 12_685_322,
    "k47_cait_small": 8_488_522,
    "k47_convmixer": 1_339_402,
}


def build(name, *args, **options):
    return models.MODELS.get(name)(*args, **options)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


# Small sizes keep these fast; what is checked is that the stem takes in_chans and that every
# shape derived from the image size (position embeddings, token MLPs, windows) follows it.
SMALL = {
    "simple_vit": dict(depth=1),
    "vit_spt_lsa": dict(depth=1),
    "cait": dict(depth=1, cls_depth=1),
    "swin_t": dict(depths=(2, 2, 2, 2)),
    "mlp_mixer": dict(depth=1),
    "convmixer": dict(depth=1),
    "mobilevit_xxs": dict(depths=(1, 1, 1)),
    "cct_7_3x1": dict(depth=1),
    "vit_lite_7_4": dict(depth=1),
    "cvt_7_4": dict(depth=1),
    "k47_vit": dict(depth=1),
    "k47_vit_small": dict(depth=1),
    "k47_simplevit": dict(depth=1),
    "k47_cait": dict(depth=1, cls_depth=1),
    "k47_convmixer": dict(depth=1),
}


def randomise(module):
    """Every parameter ~ N(0, 0.2), LayerNorm gains 1 + N(0, 0.2): no zero bias or unit gain hides a mix-up."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
        for m in module.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.add_(1.0)
