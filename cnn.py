"""
Reference convolutional networks for CIFAR-sized images (32x32 and up).

These are the baselines the other models in this package are compared with.
All hand-written networks use the CIFAR conventions of kuangliu/pytorch-cifar
and the original papers: a 3x3 stride-1 stem and no max-pool, so a 32x32 input
keeps its resolution into the first stage. Every network ends with adaptive
average pooling, so any image_size from the model's minimum up (below) works
without changing the model.

Models (each registered with models.register_model next to its builder):
- cnn: a small 3-layer conv-bn-relu-pool baseline.
- ResNet-18/34/50/101/152 (He et al. 2015), post-activation, optional
  squeeze-and-excitation, zero-init of the last BN, stochastic depth.
- PreActResNet-18/34/50/101/152 (He et al. 2016, "Identity Mappings").
- WideResNet-28-10 (Zagoruyko & Komodakis 2016).
- PyramidNet-110 (alpha 270, basic) and PyramidNet-272 (alpha 200,
  bottleneck) (Han et al. 2017) with ShakeDrop (Yamada et al. 2018).
- VGG-16/19 with batch norm, CIFAR variant (one linear layer as the head).
- EfficientNetV2-S/M/L and ConvNeXt-T/S/B/L, taken from torchvision.models
  (random init, no downloads) with the stem adapted to small images; see
  build_efficientnetv2 and build_convnext for exactly what changes.

Every builder has the same signature,

    build(<architecture>, /, num_classes, image_size=32, in_chans=3, *, dropout=0.0, <options>)

where the positional-only architecture arguments (depth, variant, ...) are bound
by the registration, `dropout` is applied right before the final linear layer
and `drop_path`, for the models with residual branches, is the stochastic-depth
rate of the last residual block (rates grow linearly from 0 at the first block).
The keyword-only parameters are exactly the options a model takes: there is no
**kwargs, so an option a model does not have (drop_path for VGG, se for a
ConvNeXt) is refused by models.build_model instead of being silently ignored.

Image sizes (declared with each registration, found by trying sizes): the
adaptive pooling takes any side from a minimum up: 8 for the 3-pool cnn,
32 for VGG (five 2x2 max-pools), 16 for ConvNeXt (four 2x2 stride-2 patch
convolutions), 1 for the others (their strided convolutions are padded).
"""


import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision import models as tv_models
from torchvision.ops import SqueezeExcitation, StochasticDepth

from models import register_model

# -----------------------------------------------------------------------------
# shared pieces


def conv3x3(in_planes, out_planes, stride=1, bias=False):
    # no bias by default: a BatchNorm follows (directly, or at the start of the next
    # pre-activation block) and its shift makes a conv bias redundant
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=bias)


def conv1x1(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


def se_layer(channels):
    # squeeze-and-excitation with the paper's reduction of 16, but never squeezing
    # below 8 channels so the narrow early stages still get a useful gate
    return SqueezeExcitation(channels, max(channels // 16, 8))


def drop_path_rates(drop_path, num_blocks):
    # stochastic depth rates grow linearly with depth, from 0 for the first block
    # to drop_path for the last (Huang et al. 2016; same rule as torchvision's ConvNeXt)
    if num_blocks == 1:
        return [drop_path]
    return [drop_path * i / (num_blocks - 1) for i in range(num_blocks)]


def init_weights(model):
    # He init for convs (as torchvision's ResNet), identity BN; linear layers keep
    # PyTorch's default init
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# -----------------------------------------------------------------------------
# small baseline


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


# -----------------------------------------------------------------------------
# ResNet, PreActResNet and WideResNet: one network class, four block types


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


# -----------------------------------------------------------------------------
# PyramidNet with ShakeDrop


class _ShakeDropFunction(torch.autograd.Function):
    """
    ShakeDrop (Yamada et al. 2018) on a residual branch, one draw per sample:
        forward:  x * (b + alpha - b * alpha),  b ~ Bernoulli(1 - p), alpha ~ U(-1, 1)
        backward: g * (b + beta  - b * beta),   beta ~ U(0, 1)
    i.e. a kept branch (b = 1) passes unchanged both ways, a dropped one is scaled by a
    random alpha going forward and by an independent random beta coming back.
    """

    @staticmethod
    def forward(ctx, x, p_drop):
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        b = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(1.0 - p_drop)
        alpha = torch.empty(shape, dtype=x.dtype, device=x.device).uniform_(-1.0, 1.0)
        # beta only matters for backward, but drawing it now with b keeps the pair consistent
        beta = torch.empty(shape, dtype=x.dtype, device=x.device).uniform_(0.0, 1.0)
        ctx.save_for_backward(b + beta - b * beta)
        return x * (b + alpha - b * alpha)

    @staticmethod
    def backward(ctx, grad_output):
        (gate,) = ctx.saved_tensors
        return grad_output * gate, None


class ShakeDrop(nn.Module):
    """ShakeDrop with drop probability p; at eval time the branch is scaled by its expectation, 1 - p."""

    def __init__(self, p_drop=0.5):
        super().__init__()
        self.p_drop = p_drop

    def forward(self, x):
        if not self.training:
            return x * (1.0 - self.p_drop)
        if self.p_drop == 0.0:
            return x
        return _ShakeDropFunction.apply(x, self.p_drop)

    def extra_repr(self):
        return f"p_drop={self.p_drop}"


def _pad_shortcut(x, out, stride):
    # PyramidNet's parameter-free shortcut: average-pool to the new resolution and
    # zero-pad the new channels (the width grows a little in every block)
    if stride != 1:
        x = F.avg_pool2d(x, 2, ceil_mode=True)
    extra = out.shape[1] - x.shape[1]
    if extra > 0:
        x = F.pad(x, (0, 0, 0, 0, 0, extra))
    return x


class PyramidBasicBlock(nn.Module):
    """PyramidNet basic block: bn-conv-bn-relu-conv-bn (no ReLU at the start or the end)."""

    expansion = 1

    def __init__(self, in_planes, planes, stride=1, shakedrop=0.0):
        super().__init__()
        self.stride = stride
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn3 = nn.BatchNorm2d(planes)
        self.shake_drop = ShakeDrop(shakedrop)

    def forward(self, x):
        out = self.conv1(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.shake_drop(self.bn3(out))
        return out + _pad_shortcut(x, out, self.stride)


class PyramidBottleneck(nn.Module):
    """PyramidNet bottleneck block: bn-conv1x1-bn-relu-conv3x3-bn-relu-conv1x1-bn."""

    expansion = 4

    def __init__(self, in_planes, planes, stride=1, shakedrop=0.0):
        super().__init__()
        self.stride = stride
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv1x1(in_planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn4 = nn.BatchNorm2d(planes * self.expansion)
        self.shake_drop = ShakeDrop(shakedrop)

    def forward(self, x):
        out = self.conv1(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        out = self.shake_drop(self.bn4(out))
        return out + _pad_shortcut(x, out, self.stride)


class PyramidNet(nn.Module):
    """
    PyramidNet for CIFAR (Han et al. 2017): three stages of equal depth whose width
    grows by alpha / (number of blocks) in every block instead of doubling per stage.
    Channel arithmetic follows the authors' code (round the running width per block).
    ShakeDrop's drop probability grows linearly from shakedrop / L to shakedrop at the
    last of the L blocks, as in the ShakeDrop paper (p_L = 0.5 there).
    """

    def __init__(self, depth=110, alpha=270, bottleneck=False, num_classes=10, in_chans=3, dropout=0.0,
                 shakedrop=0.5):
        super().__init__()
        block = PyramidBottleneck if bottleneck else PyramidBasicBlock
        # each block has 2 (basic) or 3 (bottleneck) convs; +2 for the stem and the classifier
        n = (depth - 2) // (9 if bottleneck else 6)
        num_blocks = 3 * n
        add_rate = alpha / num_blocks

        self.conv1 = conv3x3(in_chans, 16)
        self.bn1 = nn.BatchNorm2d(16)

        width, in_planes, k = 16.0, 16, 0
        stages = []
        for i in range(3):
            blocks = []
            for j in range(n):
                width += add_rate
                k += 1
                stride = 2 if (i > 0 and j == 0) else 1
                planes = int(round(width))
                blocks.append(block(in_planes, planes, stride, shakedrop=shakedrop * k / num_blocks))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*stages)

        self.bn_final = nn.BatchNorm2d(in_planes)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_planes, num_classes)
        init_weights(self)

    def forward(self, x):
        # the stem has no ReLU: every block starts with its own BN
        out = self.layers(self.bn1(self.conv1(x)))
        out = F.relu(self.bn_final(out))
        out = self.pool(out).flatten(1)
        return self.linear(self.dropout(out))


# -----------------------------------------------------------------------------
# VGG

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


# -----------------------------------------------------------------------------
# builders: the one signature every caller uses
#
# The argument that picks the architecture (depth, variant, ...) comes first and is
# positional-only: the registration binds it, and a caller's keyword of the same name
# (a ViT "depth") is refused as an option instead of silently changing the network.


@register_model("cnn", about="small baseline: 3 x (conv-BN-ReLU-maxpool), 32/64/128 channels", sizes=dict(minimum=8))
def build_cnn(num_classes: int, image_size: int = 32, in_chans: int = 3, *, dropout: float = 0.0) -> nn.Module:
    """Small 3-conv baseline (no residual branches, so no drop_path)."""
    return SimpleCNN(num_classes, in_chans, dropout=dropout)


def _resnet_block(depth, bottleneck, basic_block, bottleneck_block):
    default_bottleneck, num_blocks = RESNET_DEPTHS[depth]
    use_bottleneck = default_bottleneck if bottleneck is None else bottleneck
    return (bottleneck_block if use_bottleneck else basic_block), num_blocks


_ANY = dict(minimum=1)  # padded strided convs and adaptive pooling: any side works


@register_model("resnet18", 18, about="ResNet-18 (He et al. 2015), CIFAR stem", sizes=_ANY)
@register_model("resnet34", 34, about="ResNet-34 (He et al. 2015), CIFAR stem", sizes=_ANY)
@register_model("resnet50", 50, about="ResNet-50 (He et al. 2015), CIFAR stem", sizes=_ANY)
@register_model("resnet101", 101, about="ResNet-101 (He et al. 2015), CIFAR stem", sizes=_ANY)
@register_model("resnet152", 152, about="ResNet-152 (He et al. 2015), CIFAR stem", sizes=_ANY)
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


@register_model("preact_resnet18", 18, about="PreActResNet-18 (He et al. 2016), CIFAR stem", sizes=_ANY)
@register_model("preact_resnet34", 34, about="PreActResNet-34 (He et al. 2016), CIFAR stem", sizes=_ANY)
@register_model("preact_resnet50", 50, about="PreActResNet-50 (He et al. 2016), CIFAR stem", sizes=_ANY)
@register_model("preact_resnet101", 101, about="PreActResNet-101 (He et al. 2016), CIFAR stem", sizes=_ANY)
@register_model("preact_resnet152", 152, about="PreActResNet-152 (He et al. 2016), CIFAR stem", sizes=_ANY)
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


@register_model("wrn28_10", 28, 10, about="WideResNet-28-10 (Zagoruyko & Komodakis 2016)", sizes=_ANY)
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


@register_model("pyramidnet110", 110, 270, False, about="PyramidNet-110, alpha 270, basic blocks, ShakeDrop "
                                                         "(Han et al. 2017; Yamada et al. 2018)", sizes=_ANY)
@register_model("pyramidnet272", 272, 200, True, about="PyramidNet-272, alpha 200, bottleneck blocks, ShakeDrop",
                sizes=_ANY)
def build_pyramidnet(depth: int, alpha: int, bottleneck: bool, /, num_classes: int, image_size: int = 32,
                     in_chans: int = 3, *, dropout: float = 0.0, shakedrop: float = 0.5) -> nn.Module:
    """
    PyramidNet with ShakeDrop; `shakedrop` is the drop probability of the last block
    (0 turns ShakeDrop off). No drop_path: ShakeDrop already regularises the branches.
    The block type is part of the architecture here (110: basic, 272: bottleneck), so
    ResNet's `bottleneck` option does not apply.
    """
    return PyramidNet(depth, alpha, bottleneck, num_classes=num_classes, in_chans=in_chans, dropout=dropout,
                      shakedrop=shakedrop)


@register_model("vgg16", 16, about="VGG-16 with batch norm, CIFAR variant (one linear layer)", sizes=dict(minimum=32))
@register_model("vgg19", 19, about="VGG-19 with batch norm, CIFAR variant (one linear layer)", sizes=dict(minimum=32))
def build_vgg(depth: int, /, num_classes: int, image_size: int = 32, in_chans: int = 3, *,
              dropout: float = 0.0) -> nn.Module:
    """VGG-16/19 with batch norm, CIFAR variant (no residual branches, so no drop_path)."""
    return VGG(depth, num_classes, in_chans, dropout=dropout)


@register_model("efficientnetv2_s", "s", about="torchvision EfficientNetV2-S, stride-1 stem", sizes=_ANY)
@register_model("efficientnetv2_m", "m", about="torchvision EfficientNetV2-M, stride-1 stem", sizes=_ANY)
@register_model("efficientnetv2_l", "l", about="torchvision EfficientNetV2-L, stride-1 stem", sizes=_ANY)
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
