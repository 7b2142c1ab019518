"""The plain (no residual) CNNs:
- cnn: a small 3-layer conv-bn-relu-pool baseline.
- VGG-16/19 (Simonyan & Zisserman 2015) with batch norm, CIFAR variant (one linear layer as the head).

Conventions (CIFAR stem, builder signature, image sizes): models/conv_layers.py.
"""
import torch.nn as nn

from models import register_model
from models.conv_layers import conv3x3, init_weights


class SimpleCNN(nn.Module):
    """Three conv-bn-relu-maxpool stages (32/64/128 channels), then a linear head."""

    def __init__(self, num_classes=10, in_chans=3, widths=(32, 64, 128), dropout=0.0):
        super().__init__()
        layers = []
        for width in widths:
            layers += [conv3x3(in_chans, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            in_chans = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(widths[-1], num_classes)
        init_weights(self)

    def forward(self, x):
        x = self.pool(self.features(x)).flatten(1)
        return self.linear(self.dropout(x))


VGG_CONFIGS = {
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """
    VGG with batch norm, CIFAR variant (kuangliu): the five max-pools take 32x32 down
    to 1x1, so the 4096-wide fully connected stack of the ImageNet model is replaced
    by a single linear layer on the pooled 512 features.
    """

    def __init__(self, depth=16, num_classes=10, in_chans=3, dropout=0.0):
        super().__init__()
        layers = []
        for v in VGG_CONFIGS[depth]:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                # conv bias kept (though BN makes it redundant) to match the parameter
                # counts of the kuangliu and torchvision VGG-BN models
                layers += [conv3x3(in_chans, v, bias=True), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                in_chans = v
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_chans, num_classes)
        init_weights(self)

    def forward(self, x):
        out = self.pool(self.features(x)).flatten(1)
        return self.linear(self.dropout(out))


@register_model("cnn", about="small baseline: 3 x (conv-BN-ReLU-maxpool), 32/64/128 channels", sizes=dict(minimum=8))
def build_cnn(num_classes: int, image_size: int = 32, in_chans: int = 3, *, dropout: float = 0.0) -> nn.Module:
    """Small 3-conv baseline (no residual branches, so no drop_path)."""
    return SimpleCNN(num_classes, in_chans, dropout=dropout)


@register_model("vgg16", 16, about="VGG-16 with batch norm, CIFAR variant (one linear layer)", sizes=dict(minimum=32))
@register_model("vgg19", 19, about="VGG-19 with batch norm, CIFAR variant (one linear layer)", sizes=dict(minimum=32))
def build_vgg(depth: int, /, num_classes: int, image_size: int = 32, in_chans: int = 3, *,
              dropout: float = 0.0) -> nn.Module:
    """VGG-16/19 with batch norm, CIFAR variant (no residual branches, so no drop_path)."""
    return VGG(depth, num_classes, in_chans, dropout=dropout)
