"""The mixers, patches mixed by MLPs or convolutions instead of attention:

  mlp_mixer      Tolstikhin et al. 2021, "MLP-Mixer: An all-MLP Architecture for Vision"
                 (arXiv:2105.01601).
  convmixer      Trockman & Kolter 2022, "Patches Are All You Need?" (arXiv:2201.09792).

kentaroy47's ConvMixer (k47_convmixer, models/k47.py) is this ConvMixer at another size.
"""
import torch.nn as nn

from models import register_model
from models.layers import PATCHES, FeedForward, PatchEmbed, check_divisible, init_transformer
from vit import DropPath, drop_path_rates


# --------------------------------------------------------------------------- MLP-Mixer


class MixerBlock(nn.Module):
    """x + token-mixing MLP (across patches, per channel), then x + channel-mixing MLP (per patch)."""

    def __init__(self, num_patches, dim, token_mlp_dim, channel_mlp_dim, drop_path=0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.token_mlp = FeedForward(num_patches, token_mlp_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.channel_mlp = FeedForward(dim, channel_mlp_dim)
        self.drop_path = DropPath(drop_path)

    def forward(self, x):  # (B, N, C)
        x = x + self.drop_path(self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2))
        return x + self.drop_path(self.channel_mlp(self.norm2(x)))


class MLPMixer(nn.Module):
    def __init__(self, *, num_classes, image_size, in_chans, patch_size, dim, depth, token_mlp_dim,
                 channel_mlp_dim, dropout=0.0, drop_path=0.0):
        super().__init__()
        check_divisible(image_size, patch_size, "MLP-Mixer")
        num_patches = (image_size // patch_size) ** 2
        self.stem = PatchEmbed(in_chans, dim, patch_size)
        self.blocks = nn.Sequential(*[MixerBlock(num_patches, dim, token_mlp_dim, channel_mlp_dim, p)
                                      for p in drop_path_rates(drop_path, depth)])
        self.norm = nn.LayerNorm(dim)
        self.head_drop = nn.Dropout(dropout)
        self.head = nn.Linear(dim, num_classes)
        self.apply(init_transformer)

    def forward(self, x):
        x = self.norm(self.blocks(self.stem(x))).mean(dim=1)  # global average pooling over patches
        return self.head(self.head_drop(x))


@register_model("mlp_mixer", about="MLP-Mixer (Tolstikhin et al. 2021) for CIFAR: patch 4, dim 512, depth 8",
                sizes=PATCHES)
def build_mlp_mixer(num_classes: int, image_size: int = 32, in_chans: int = 3, *, dropout: float = 0.0,
                    drop_path: float = 0.0, patch_size: int = 4, dim: int = 512, depth: int = 8,
                    token_mlp_dim: int = 256, channel_mlp_dim: int = 2048) -> nn.Module:
    """MLP-Mixer for CIFAR: patch 4 (64 patches), dim 512, depth 8, token MLP 256, channel MLP 2048.
    The token MLP acts on the patch axis, so its size follows image_size."""
    return MLPMixer(num_classes=num_classes, image_size=image_size, in_chans=in_chans, dropout=dropout,
                    drop_path=drop_path, patch_size=patch_size, dim=dim, depth=depth, token_mlp_dim=token_mlp_dim,
                    channel_mlp_dim=channel_mlp_dim)


# --------------------------------------------------------------------------- ConvMixer


class Residual(nn.Module):
    def __init__(self, fn, drop_path=0.0):
        super().__init__()
        self.fn = fn
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        return x + self.drop_path(self.fn(x))


def ConvMixer(*, num_classes, in_chans, dim, depth, kernel_size, patch_size, dropout=0.0, drop_path=0.0):
    """ConvMixer, as the paper's listing: a patch-embedding conv, then `depth` times a residual
    depthwise conv (spatial mixing) and a pointwise conv (channel mixing), each followed by GELU + BN."""
    return nn.Sequential(
        nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size), nn.GELU(), nn.BatchNorm2d(dim),
        *[nn.Sequential(
            Residual(nn.Sequential(
                # "same": k//2 written out for odd kernels so ONNX export is plain; an even kernel
                # (k47_convmixer's 8) needs the asymmetric padding only "same" gives
                nn.Conv2d(dim, dim, kernel_size, groups=dim, padding=kernel_size // 2 if kernel_size % 2 else "same"),
                nn.GELU(),
                nn.BatchNorm2d(dim)), drop_path=p),
            nn.Conv2d(dim, dim, kernel_size=1), nn.GELU(), nn.BatchNorm2d(dim))
          for p in drop_path_rates(drop_path, depth)],
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(dim, num_classes))


@register_model("convmixer", about="ConvMixer-256/8 (Trockman & Kolter 2022), its CIFAR settings: kernel 5, "
                                  "patch 2; not kentaroy47's convmixer: see k47_convmixer", sizes=PATCHES)
def build_convmixer(num_classes: int, image_size: int = 32, in_chans: int = 3, *, dropout: float = 0.0,
                    drop_path: float = 0.0, dim: int = 256, depth: int = 8, kernel_size: int = 5,
                    patch_size: int = 2) -> nn.Module:
    """ConvMixer-256/8 with the paper's CIFAR-10 settings: kernel 5, patch 2 (about 0.59M parameters).
    drop_path (default 0, not in the paper) drops the residual depthwise branch."""
    check_divisible(image_size, patch_size, "ConvMixer")
    return ConvMixer(num_classes=num_classes, in_chans=in_chans, dropout=dropout, drop_path=drop_path, dim=dim,
                     depth=depth, kernel_size=kernel_size, patch_size=patch_size)
