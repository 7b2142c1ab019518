"""ResNet, PreActResNet and WideResNet: one network class, four block types.
- ResNet-18/34/50/101/152 (He et al. 2015), post-activation, optional
  squeeze-and-excitation, zero-init of the last BN, stochastic depth.
- PreActResNet-18/34/50/101/152 (He et al. 2016, "Identity Mappings").
- WideResNet-28-10 (Zagoruyko & Komodakis 2016).

Conventions (CIFAR stem, builder signature, image sizes): models/conv_layers.py.
"""
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import StochasticDepth

from models import register_model
from models.conv_layers import ANY_SIZE, conv1x1, conv3x3, drop_path_rates, init_weights, se_layer


class BasicBlock(nn.Module):
    """Post-activation 3x3-3x3 block of ResNet-18/34: relu(bn(conv(...)) + shortcut)."""

    expansion = 1
    preact = False

    def __init__(self, in_planes, planes, stride=1, se=False, drop_path=0.0, **kwargs):
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.se = se_layer(planes) if se else nn.Identity()
        self.drop_path = StochasticDepth(drop_path, "row")
        # project the input only when the shape changes (option B of the ResNet paper)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(conv1x1(in_planes, planes, stride), nn.BatchNorm2d(planes))

    def zero_init_last(self):
        # with gamma = 0 the residual branch starts as zero, so the block starts as
        # (relu of) the identity: Goyal et al. 2017
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = self.drop_path(self.se(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """Post-activation 1x1-3x3-1x1 block of ResNet-50/101/152 (stride on the 3x3, as kuangliu/torchvision)."""

    expansion = 4
    preact = False

    def __init__(self, in_planes, planes, stride=1, se=False, drop_path=0.0, **kwargs):
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = conv1x1(in_planes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_planes)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.se = se_layer(out_planes) if se else nn.Identity()
        self.drop_path = StochasticDepth(drop_path, "row")
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(conv1x1(in_planes, out_planes, stride), nn.BatchNorm2d(out_planes))

    def zero_init_last(self):
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = self.drop_path(self.se(out))
        return F.relu(out + self.shortcut(x))


class PreActBlock(nn.Module):
    """
    Pre-activation 3x3-3x3 block (He et al. 2016): bn-relu comes before each conv and
    nothing follows the addition, so the identity path stays clean through the network.
    With block_dropout > 0 it is also the block of WideResNet (dropout between the convs).
    """

    expansion = 1
    preact = True

    def __init__(self, in_planes, planes, stride=1, se=False, drop_path=0.0, block_dropout=0.0, **kwargs):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.dropout = nn.Dropout(block_dropout)
        self.conv2 = conv3x3(planes, planes)
        self.se = se_layer(planes) if se else nn.Identity()
        self.drop_path = StochasticDepth(drop_path, "row")
        # the projection needs no BN: it reads the already normalised input (see forward)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = conv1x1(in_planes, planes, stride)

    def zero_init_last(self):
        # the branch ends in a conv, not a BN, so zero that conv instead
        nn.init.zeros_(self.conv2.weight)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        # a projection shortcut shares the first activation, as in the paper's code
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        out = self.drop_path(self.se(out))
        return out + shortcut


class PreActBottleneck(nn.Module):
    """Pre-activation 1x1-3x3-1x1 block of PreActResNet-50/101/152."""

    expansion = 4
    preact = True

    def __init__(self, in_planes, planes, stride=1, se=False, drop_path=0.0, **kwargs):
        super().__init__()
        out_planes = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv1x1(in_planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_planes)
        self.se = se_layer(out_planes) if se else nn.Identity()
        self.drop_path = StochasticDepth(drop_path, "row")
        self.shortcut = None
        if stride != 1 or in_planes != out_planes:
            self.shortcut = conv1x1(in_planes, out_planes, stride)

    def zero_init_last(self):
        nn.init.zeros_(self.conv3.weight)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        out = self.drop_path(self.se(out))
        return out + shortcut


class ResNet(nn.Module):
    """
    Residual network for small images: a 3x3 stride-1 stem, then one stage per entry
    of `widths` (the first at stride 1, the rest halving the resolution), global
    average pooling and a linear classifier.

    Post-activation blocks (ResNet) put BN-ReLU in the stem; pre-activation blocks
    (PreActResNet, WideResNet) instead need a final BN-ReLU after the last block,
    because their residual sum is never normalised inside the blocks.
    """

    def __init__(self, block, num_blocks, widths=(64, 128, 256, 512), stem_width=None, num_classes=10,
                 in_chans=3, dropout=0.0, drop_path=0.0, zero_init_residual=False, **block_kwargs):
        super().__init__()
        stem_width = stem_width or widths[0]
        if block.preact:
            self.stem = conv3x3(in_chans, stem_width)
        else:
            self.stem = nn.Sequential(conv3x3(in_chans, stem_width), nn.BatchNorm2d(stem_width), nn.ReLU(inplace=True))

        rates = iter(drop_path_rates(drop_path, sum(num_blocks)))
        in_planes = stem_width
        stages = []
        for i, (planes, n) in enumerate(zip(widths, num_blocks)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(in_planes, planes, stride, drop_path=next(rates), **block_kwargs))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*stages)

        self.final_act = nn.Identity()
        if block.preact:
            self.final_act = nn.Sequential(nn.BatchNorm2d(in_planes), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_planes, num_classes)

        init_weights(self)
        if zero_init_residual:
            for m in self.modules():
                if hasattr(m, "zero_init_last"):
                    m.zero_init_last()

    def forward(self, x):
        out = self.final_act(self.layers(self.stem(x)))
        out = self.pool(out).flatten(1)
        return self.linear(self.dropout(out))


# depth -> (uses bottleneck blocks?, blocks per stage), as in the ResNet paper
RESNET_DEPTHS = {
    18: (False, (2, 2, 2, 2)),
    34: (False, (3, 4, 6, 3)),
    50: (True, (3, 4, 6, 3)),
    101: (True, (3, 4, 23, 3)),
    152: (True, (3, 8, 36, 3)),
}


def _resnet_block(depth, bottleneck, basic_block, bottleneck_block):
    default_bottleneck, num_blocks = RESNET_DEPTHS[depth]
    use_bottleneck = default_bottleneck if bottleneck is None else bottleneck
    return (bottleneck_block if use_bottleneck else basic_block), num_blocks


@register_model("resnet18", 18, about="ResNet-18 (He et al. 2015), CIFAR stem", sizes=ANY_SIZE)
@register_model("resnet34", 34, about="ResNet-34 (He et al. 2015), CIFAR stem", sizes=ANY_SIZE)
@register_model("resnet50", 50, about="ResNet-50 (He et al. 2015), CIFAR stem", sizes=ANY_SIZE)
@register_model("resnet101", 101, about="ResNet-101 (He et al. 2015), CIFAR stem", sizes=ANY_SIZE)
@register_model("resnet152", 152, about="ResNet-152 (He et al. 2015), CIFAR stem", sizes=ANY_SIZE)
def build_resnet(depth: int, /, num_classes: int, image_size: int = 32, in_chans: int = 3, *,
                 dropout: float = 0.0, drop_path: float = 0.0, bottleneck: bool | None = None,
                 zero_init_residual: bool = False, se: bool = False) -> nn.Module:
    """
    ResNet-{18,34,50,101,152} with the CIFAR stem.

    bottleneck: None uses the paper's block for the depth (basic for 18/34, bottleneck
        for 50+); True/False forces the block type, keeping the blocks per stage.
    zero_init_residual: zero the last BN gamma of every residual branch.
    se: squeeze-and-excitation on every residual branch.
    """
    block, num_blocks = _resnet_block(depth, bottleneck, BasicBlock, Bottleneck)
    return ResNet(block, num_blocks, num_classes=num_classes, in_chans=in_chans, dropout=dropout,
                  drop_path=drop_path, zero_init_residual=zero_init_residual, se=se)


@register_model("preact_resnet18", 18, about="PreActResNet-18 (He et al. 2016), CIFAR stem", sizes=ANY_SIZE)
@register_model("preact_resnet34", 34, about="PreActResNet-34 (He et al. 2016), CIFAR stem", sizes=ANY_SIZE)
@register_model("preact_resnet50", 50, about="PreActResNet-50 (He et al. 2016), CIFAR stem", sizes=ANY_SIZE)
@register_model("preact_resnet101", 101, about="PreActResNet-101 (He et al. 2016), CIFAR stem", sizes=ANY_SIZE)
@register_model("preact_resnet152", 152, about="PreActResNet-152 (He et al. 2016), CIFAR stem", sizes=ANY_SIZE)
def build_preact_resnet(depth: int, /, num_classes: int, image_size: int = 32, in_chans: int = 3, *,
                        dropout: float = 0.0, drop_path: float = 0.0, bottleneck: bool | None = None,
                        zero_init_residual: bool = False, se: bool = False) -> nn.Module:
    """
    PreActResNet-{18,34,50,101,152} with the CIFAR stem; options as build_resnet, except
    that zero_init_residual zeroes the last conv of each branch (the branch ends in a
    conv, not a BN, in a pre-activation block).
    """
    block, num_blocks = _resnet_block(depth, bottleneck, PreActBlock, PreActBottleneck)
    return ResNet(block, num_blocks, num_classes=num_classes, in_chans=in_chans, dropout=dropout,
                  drop_path=drop_path, zero_init_residual=zero_init_residual, se=se)


@register_model("wrn28_10", 28, 10, about="WideResNet-28-10 (Zagoruyko & Komodakis 2016)", sizes=ANY_SIZE)
def build_wide_resnet(depth: int, widen: int, /, num_classes: int, image_size: int = 32, in_chans: int = 3, *,
                      dropout: float = 0.0, drop_path: float = 0.0, block_dropout: float = 0.0) -> nn.Module:
    """
    WideResNet-depth-widen: pre-activation basic blocks, 3 stages of (depth - 4) / 6
    blocks at widths 16k/32k/64k. block_dropout is the dropout between the two convs
    of each block; it defaults to 0.0 here (the paper's best CIFAR runs used 0.3).
    """
    n = (depth - 4) // 6
    widths = (16 * widen, 32 * widen, 64 * widen)
    return ResNet(PreActBlock, (n, n, n), widths=widths, stem_width=16, num_classes=num_classes,
                  in_chans=in_chans, dropout=dropout, drop_path=drop_path, block_dropout=block_dropout)
