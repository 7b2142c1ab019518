"""The Vision Transformer of ViT-CIFAR (omihub777/ViT-CIFAR; Dosovitskiy et al. 2021, sized for 32x32 images).

    image -> 4x4 patches -> Linear -> [cls] + patches + learned position embedding
          -> N x (x + MSA(LN(x)); x + MLP(LN(x)))  -> LN -> Linear on the cls token

`PRESETS` is the one table of sizes. `vit` is the ViT-CIFAR network (6,268,810 parameters at 10
classes); `vit_tiny`, `vit_small` and `vit_base` are the DeiT sizes with 4x4 patches (not the
`vit_small` / `vit_tiny` of kentaroy47/vision-transformers-cifar10: those are `k47_vit_small` /
`k47_vit_tiny` in models/k47.py).

`maths="original"` (the default) is ViT-CIFAR's network as published, and differs from the
standard ViT in two details; `maths="standard"` gives the standard ViT:
  * attention scores divided by sqrt(hidden) instead of sqrt(head dim), which makes the softmax
    much flatter (12 heads: scores are sqrt(12) = 3.5x smaller);
  * a GELU after the MLP's output layer, so each residual branch adds only values >= -0.17.
The parameters are the same either way. tests/test_vit.py checks the default against an
independent re-implementation of ViT-CIFAR's layers with the same weights.

Stochastic depth (`drop_path`, default 0: the published network has none) drops each block's two
residual branches per sample, at a rate rising linearly from 0 at the first block to `drop_path`
at the last (as timm / DeiT). `DropPath`, `drop_path_rates` and `patchify` are the one
definition of each in the code base; the models/ families import them.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from models import register_model

# Sizes per preset. `vit` is ViT-CIFAR; the others are the DeiT sizes with 4x4 patches.
PRESETS = {
    "vit": dict(num_layers=7, hidden=384, mlp_hidden=384, head=12),
    "vit_tiny": dict(num_layers=12, hidden=192, mlp_hidden=768, head=3),
    "vit_small": dict(num_layers=12, hidden=384, mlp_hidden=1536, head=6),
    "vit_base": dict(num_layers=12, hidden=768, mlp_hidden=3072, head=12),
}
MATHS = ("original", "standard")  # the first is the default


# --------------------------------------------------------------------------- shared with models/


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): drop a whole residual branch per sample, rescale the
    survivors by 1/keep so the expected branch output is unchanged; the identity in eval mode."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self):
        return f"p={self.p}"


def drop_path_rates(drop_path, depth):
    """Stochastic depth rising linearly from 0 at the first block to `drop_path` at the last.

    A single block gets `drop_path` itself (torch.linspace would give it 0, silently turning the
    option off for one-block models)."""
    return torch.linspace(0, drop_path, depth).tolist() if depth > 1 else [drop_path] * depth


def patchify(x, p):
    """(B, C, H, W) -> (B, (H/p)(W/p), p*p*C): patches in row-major order, each flattened as
    (row, col, channel), the layout of ViT-CIFAR's `_to_words` and of einops'
    'b c (h p1) (w p2) -> b (h w) (p1 p2 c)'."""
    B, C, H, W = x.shape
    x = x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(B, (H // p) * (W // p), p * p * C)


# --------------------------------------------------------------------------- ViT-CIFAR


class Attention(nn.Module):
    def __init__(self, hidden, head, dropout=0.0, maths="original"):
        super().__init__()
        self.head = head
        # One fused projection for q, k, v (ViT-CIFAR has three Linears: the same maths, one matmul).
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)
        # None lets SDPA use 1/sqrt(head dim); the original code divides by sqrt(hidden).
        self.scale = hidden ** -0.5 if maths == "original" else None

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.head, d // self.head).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.dropout(self.out(x.transpose(1, 2).reshape(b, n, d)))


class MLP(nn.Sequential):
    def __init__(self, hidden, mlp_hidden, dropout=0.0, maths="original"):
        layers = [nn.Linear(hidden, mlp_hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_hidden, hidden)]
        if maths == "original":
            layers.append(nn.GELU())
        layers.append(nn.Dropout(dropout))
        super().__init__(*layers)


class Block(nn.Module):
    def __init__(self, hidden, mlp_hidden, head, dropout=0.0, maths="original", drop_path=0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden)
        self.attn = Attention(hidden, head, dropout, maths)
        self.norm2 = nn.LayerNorm(hidden)
        self.mlp = MLP(hidden, mlp_hidden, dropout, maths)
        # One module for both branches: it holds no state, each call draws its own mask.
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ViT(nn.Module):
    def __init__(self, num_classes=10, image_size=32, in_chans=3, patch_size=4, num_layers=7, hidden=384,
                 mlp_hidden=384, head=12, dropout=0.0, cls_token=True, maths="original", drop_path=0.0):
        super().__init__()
        if maths not in MATHS:
            raise ValueError(f"maths must be one of {MATHS}")
        if image_size % patch_size:
            raise ValueError(f"ViT: image_size {image_size} must be a multiple of patch_size {patch_size}")
        self.patch_size = patch_size
        num_patches = (image_size // patch_size) ** 2
        self.embed = nn.Linear(patch_size * patch_size * in_chans, hidden)
        self.cls_token = nn.Parameter(torch.randn(1, 1, hidden)) if cls_token else None
        self.pos_embed = nn.Parameter(torch.randn(1, num_patches + int(cls_token), hidden))
        self.blocks = nn.Sequential(*[Block(hidden, mlp_hidden, head, dropout, maths, p)
                                      for p in drop_path_rates(drop_path, num_layers)])
        self.head = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, num_classes))

    def patchify(self, x):
        return patchify(x, self.patch_size)

    def forward(self, x):
        x = self.embed(self.patchify(x))
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.blocks(x + self.pos_embed)
        x = x[:, 0] if self.cls_token is not None else x.mean(dim=1)
        return self.head(x)


_ABOUT = {
    "vit": "ViT-CIFAR (omihub777/ViT-CIFAR): 7 blocks, hidden 384, 12 heads, MLP 384, 4x4 patches; "
           "not kentaroy47's vit: see k47_vit",
    "vit_tiny": "DeiT-Ti size (12 blocks, 192, 3 heads, MLP 768) with 4x4 patches; "
                "not kentaroy47's vit_tiny: see k47_vit_tiny",
    "vit_small": "DeiT-S size (12 blocks, 384, 6 heads, MLP 1536) with 4x4 patches; "
                 "not kentaroy47's vit_small: see k47_vit_small",
    "vit_base": "ViT-B size (12 blocks, 768, 12 heads, MLP 3072) with 4x4 patches",
}
# Every preset takes images cut into whole patches; patch_size is an option (default 4).
_PATCHES = dict(multiple="patch_size")


@register_model("vit", preset="vit", about=_ABOUT["vit"], sizes=_PATCHES)
@register_model("vit_tiny", preset="vit_tiny", about=_ABOUT["vit_tiny"], sizes=_PATCHES)
@register_model("vit_small", preset="vit_small", about=_ABOUT["vit_small"], sizes=_PATCHES)
@register_model("vit_base", preset="vit_base", about=_ABOUT["vit_base"], sizes=_PATCHES)
def build_vit(num_classes, image_size=32, in_chans=3, *, preset="vit", dropout=0.0, drop_path=0.0,
              patch_size=4, num_layers=None, hidden=None, mlp_hidden=None, head=None, cls_token=True,
              maths="original"):
    """Builds a preset; a size given (not None) replaces the preset's value.

    maths: "original" (ViT-CIFAR's, the default) or "standard" (see the module docstring).
    cls_token: False averages the tokens instead. drop_path: the last block's stochastic-depth rate.
    """
    sizes = dict(num_layers=num_layers, hidden=hidden, mlp_hidden=mlp_hidden, head=head)
    kwargs = {**PRESETS[preset], **{k: v for k, v in sizes.items() if v is not None}}
    return ViT(num_classes=num_classes, image_size=image_size, in_chans=in_chans, patch_size=patch_size,
               dropout=dropout, drop_path=drop_path, cls_token=cls_token, maths=maths, **kwargs)
