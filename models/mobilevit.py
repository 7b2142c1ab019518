"""MobileViT-XXS for 32x32 (`mobilevit_xxs`): Mehta & Rastegari 2022, "MobileViT: Light-weight,
General-purpose, and Mobile-friendly Vision Transformer" (arXiv:2110.02178): MobileNetV2 inverted
residuals, and blocks that run a transformer across patches between local convolutions.
"""
import torch
import torch.nn as nn

from models import register_model
from models.layers import Block, check_divisible
from vit import drop_path_rates


def conv_bn_act(c_in, c_out, kernel_size=3, stride=1, groups=1, act=True):
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out), nn.SiLU() if act else nn.Identity())


class MV2Block(nn.Module):
    """MobileNetV2 inverted residual: 1x1 expand -> 3x3 depthwise (stride) -> 1x1 project (linear)."""

    def __init__(self, c_in, c_out, stride=1, expansion=2):
        super().__init__()
        hidden = c_in * expansion
        self.use_residual = stride == 1 and c_in == c_out
        self.conv = nn.Sequential(
            conv_bn_act(c_in, hidden, 1) if expansion != 1 else nn.Identity(),
            conv_bn_act(hidden, hidden, 3, stride, groups=hidden),
            conv_bn_act(hidden, c_out, 1, act=False))

    def forward(self, x):
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileViTBlock(nn.Module):
    """Local (convs) -> global (transformer across patches) -> fuse with the input.

    The d-channel map is cut into ph x pw patches; the transformer then runs, for each of the ph*pw
    pixel positions, over the sequence of patches, so every pixel sees the whole image while the
    convolutions keep the spatial order.
    """

    def __init__(self, channels, dim, depth, heads, mlp_dim, patch_size=2, dropout=0.0, attn_dropout=0.0,
                 drop_path=0.0):
        super().__init__()
        self.patch_size = patch_size
        self.local = nn.Sequential(conv_bn_act(channels, channels, 3),
                                   nn.Conv2d(channels, dim, 1, bias=False))
        self.transformer = nn.Sequential(*[
            Block(dim, heads, dim // heads, mlp_dim, act=nn.SiLU, dropout=dropout, attn_dropout=attn_dropout,
                  drop_path=p) for p in drop_path_rates(drop_path, depth)])
        self.norm = nn.LayerNorm(dim)
        self.proj = conv_bn_act(dim, channels, 1)
        self.fusion = conv_bn_act(2 * channels, channels, 3)

    def forward(self, x):
        y = self.local(x)
        B, D, H, W = y.shape
        p = self.patch_size
        # unfold: (B, D, H, W) -> (B * p * p, patches, D)
        y = y.reshape(B, D, H // p, p, W // p, p).permute(0, 3, 5, 2, 4, 1).reshape(B * p * p, -1, D)
        y = self.norm(self.transformer(y))
        # fold back
        y = y.reshape(B, p, p, H // p, W // p, D).permute(0, 5, 3, 1, 4, 2).reshape(B, D, H, W)
        return self.fusion(torch.cat([x, self.proj(y)], dim=1))


class MobileViT(nn.Module):
    def __init__(self, *, num_classes, image_size, in_chans, dims, channels, depths, heads, expansion, patch_size,
                 stem_stride, dropout=0.0, attn_dropout=0.0, drop_path=0.0):
        super().__init__()
        c = channels
        check_divisible(image_size, stem_stride * 16 * patch_size, "MobileViT")
        mvit = dict(heads=heads, patch_size=patch_size, dropout=dropout, attn_dropout=attn_dropout,
                    drop_path=drop_path)
        self.stem = conv_bn_act(in_chans, c[0], 3, stride=stem_stride)
        self.layers = nn.Sequential(
            MV2Block(c[0], c[1], 1, expansion),                                           # layer1
            MV2Block(c[1], c[2], 2, expansion), MV2Block(c[2], c[3], 1, expansion),        # layer2
            MV2Block(c[3], c[3], 1, expansion),
            MV2Block(c[3], c[4], 2, expansion),                                           # layer3
            MobileViTBlock(c[5], dims[0], depths[0], mlp_dim=2 * dims[0], **mvit),
            MV2Block(c[5], c[6], 2, expansion),                                           # layer4
            MobileViTBlock(c[7], dims[1], depths[1], mlp_dim=2 * dims[1], **mvit),
            MV2Block(c[7], c[8], 2, expansion),                                           # layer5
            MobileViTBlock(c[9], dims[2], depths[2], mlp_dim=2 * dims[2], **mvit),
            conv_bn_act(c[9], c[10], 1))
        self.head_drop = nn.Dropout(dropout)
        self.head = nn.Linear(c[10], num_classes)

    def forward(self, x):
        x = self.layers(self.stem(x)).mean(dim=(2, 3))
        return self.head(self.head_drop(x))


@register_model("mobilevit_xxs", about="MobileViT-XXS (Mehta & Rastegari 2022), stem stride 1 for 32x32",
                sizes=dict(multiple=lambda o: 16 * o["stem_stride"] * o["patch_size"]))
def build_mobilevit_xxs(num_classes: int, image_size: int = 32, in_chans: int = 3, *, dropout: float = 0.0,
                        drop_path: float = 0.0, dims: tuple = (64, 80, 96),
                        channels: tuple = (16, 16, 24, 24, 48, 48, 64, 64, 80, 80, 320), depths: tuple = (2, 4, 3),
                        heads: int = 4, expansion: int = 2, patch_size: int = 2, stem_stride: int = 1,
                        attn_dropout: float = 0.0) -> nn.Module:
    """MobileViT-XXS (layout of apple/ml-cvnets): transformer dims (64, 80, 96) with depths (2, 4, 3),
    4 heads, FFN 2x dim, channels (16, 16, 24, 24, 48, 48, 64, 64, 80, 80, 320), MV2 expansion 2,
    2x2 patches.

    Adaptation for 32x32: the stem conv has stride 1 (not 2), so the feature maps are 32, 16, 8, 4, 2
    instead of 1/8 the size; the three MobileViT blocks see 8x8, 4x4 and 2x2 maps, i.e. 16, 4 and 1
    patches (the last block's attention has a single token and acts as a per-pixel MLP).
    The paper's classifier dropout is 0.1: pass dropout=0.1.
    """
    return MobileViT(num_classes=num_classes, image_size=image_size, in_chans=in_chans, dropout=dropout,
                     drop_path=drop_path, dims=dims, channels=channels, depths=depths, heads=heads,
                     expansion=expansion, patch_size=patch_size, stem_stride=stem_stride, attn_dropout=attn_dropout)
