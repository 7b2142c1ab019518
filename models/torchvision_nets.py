"""EfficientNetV2-S/M/L and ConvNeXt-T/S/B/L, taken from torchvision.models
(random init, no downloads) with the stem adapted to small images; see
build_efficientnetv2 and build_convnext for exactly what changes.

Conventions (builder signature, image sizes): models/conv_layers.py.
"""
import torch.nn as nn
from torchvision import models as tv_models

from models import register_model
from models.conv_layers import ANY_SIZE


@register_model("efficientnetv2_s", "s", about="torchvision EfficientNetV2-S, stride-1 stem", sizes=ANY_SIZE)
@register_model("efficientnetv2_m", "m", about="torchvision EfficientNetV2-M, stride-1 stem", sizes=ANY_SIZE)
@register_model("efficientnetv2_l", "l", about="torchvision EfficientNetV2-L, stride-1 stem", sizes=ANY_SIZE)
def build_efficientnetv2(variant: str, /, num_classes: int, image_size: int = 32, in_chans: int = 3, *,
                         dropout: float = 0.0, drop_path: float = 0.0) -> nn.Module:
    """
    torchvision's EfficientNetV2-{s,m,l}, randomly initialised, adapted to small images.

    The only architectural change is the stem: its 3x3 stride-2 conv becomes a 3x3
    stride-1 conv from in_chans channels. The total stride drops from 32 to 16, so a
    32x32 image ends as a 2x2 feature map (instead of 1x1, where the last stages would
    see no spatial context at all). `dropout` replaces torchvision's head dropout
    (0.2/0.3/0.4 by default) and `drop_path` its stochastic depth (0.2 by default;
    torchvision's ramp stops one step short, at drop_path * (L - 1) / L).
    """
    make = getattr(tv_models, f"efficientnet_v2_{variant}")
    model = make(weights=None, num_classes=num_classes, dropout=dropout, stochastic_depth_prob=drop_path)
    old = model.features[0][0]
    stem = nn.Conv2d(in_chans, old.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(stem.weight, mode="fan_out")  # torchvision's init for this conv
    model.features[0][0] = stem
    return model


@register_model("convnext_tiny", "tiny", about="torchvision ConvNeXt-T, 2x2 patchify stem", sizes=dict(minimum=16))
@register_model("convnext_small", "small", about="torchvision ConvNeXt-S, 2x2 patchify stem", sizes=dict(minimum=16))
@register_model("convnext_base", "base", about="torchvision ConvNeXt-B, 2x2 patchify stem", sizes=dict(minimum=16))
@register_model("convnext_large", "large", about="torchvision ConvNeXt-L, 2x2 patchify stem", sizes=dict(minimum=16))
def build_convnext(variant: str, /, num_classes: int, image_size: int = 32, in_chans: int = 3, *,
                   dropout: float = 0.0, drop_path: float = 0.0) -> nn.Module:
    """
    torchvision's ConvNeXt-{tiny,small,base,large}, randomly initialised, adapted to small images.

    The 4x4 stride-4 patchify stem becomes a 2x2 stride-2 patchify stem from in_chans
    channels (still non-overlapping patches, followed by the original LayerNorm). The
    total stride drops from 32 to 16, so a 32x32 image gives 16x16 tokens in the first
    stage and a 2x2 map at the end, the same final size as the EfficientNetV2 adaptation.
    `dropout` is inserted before the final linear layer (torchvision has none) and
    `drop_path` replaces its stochastic depth (0.1/0.4/0.5/0.5 by default).
    """
    make = getattr(tv_models, f"convnext_{variant}")
    model = make(weights=None, num_classes=num_classes, stochastic_depth_prob=drop_path)
    old = model.features[0][0]
    stem = nn.Conv2d(in_chans, old.out_channels, kernel_size=2, stride=2, bias=True)
    nn.init.trunc_normal_(stem.weight, std=0.02)  # torchvision's init for ConvNeXt convs
    nn.init.zeros_(stem.bias)
    model.features[0][0] = stem
    norm, flatten, linear = model.classifier
    model.classifier = nn.Sequential(norm, flatten, nn.Dropout(dropout), linear)
    return model
