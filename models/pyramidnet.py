"""PyramidNet-110 (alpha 270, basic) and PyramidNet-272 (alpha 200, bottleneck)
(Han et al. 2017) with ShakeDrop (Yamada et al. 2018).

Conventions (CIFAR stem, builder signature, image sizes): models/conv_layers.py.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from models import register_model
from models.conv_layers import ANY_SIZE, conv1x1, conv3x3, init_weights


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


@register_model("pyramidnet110", 110, 270, False, about="PyramidNet-110, alpha 270, basic blocks, ShakeDrop "
                                                         "(Han et al. 2017; Yamada et al. 2018)", sizes=ANY_SIZE)
@register_model("pyramidnet272", 272, 200, True, about="PyramidNet-272, alpha 200, bottleneck blocks, ShakeDrop",
                sizes=ANY_SIZE)
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
