"""The pieces the reference CNNs of this package share (vgg, resnet, pyramidnet, torchvision_nets),
the baselines the other models are compared with.

All hand-written networks use the CIFAR conventions of kuangliu/pytorch-cifar
and the original papers: a 3x3 stride-1 stem and no max-pool, so a 32x32 input
keeps its resolution into the first stage. Every network ends with adaptive
average pooling, so any image_size from the model's minimum up (below) works
without changing the model.

Every builder has the same signature,

    build(<architecture>, /, num_classes, image_size=32, in_chans=3, *, dropout=0.0, <options>)

where the positional-only architecture arguments (depth, variant, ...) are bound
by the registration, `dropout` is applied right before the final linear layer
and `drop_path`, for the models with residual branches, is the stochastic-depth
rate of the last residual block (rates grow linearly from 0 at the first block).
The architecture argument comes first and is positional-only so that a caller's
keyword of the same name (a ViT "depth") is refused as an option instead of
silently changing the network. The keyword-only parameters are exactly the
options a model takes: there is no **kwargs, so an option a model does not have
(drop_path for VGG, se for a ConvNeXt) is refused by models.build_model instead
of being silently ignored.

Image sizes (declared with each registration, found by trying sizes): the
adaptive pooling takes any side from a minimum up: 8 for the 3-pool cnn,
32 for VGG (five 2x2 max-pools), 16 for ConvNeXt (four 2x2 stride-2 patch
convolutions), 1 for the others (their strided convolutions are padded).
"""
import torch.nn as nn
from torchvision.ops import SqueezeExcitation


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
    # (not vit.drop_path_rates: that one goes through float32 torch.linspace, so its rates
    # differ in the last digits; these networks keep their float64 rates)
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


ANY_SIZE = dict(minimum=1)  # padded strided convs and adaptive pooling: any side works
