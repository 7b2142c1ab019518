"""The Vision Transformer of ViT-CIFAR (Dosovitskiy et al. 2021, sized for 32x32 images).

    image -> 4x4 patches -> Linear -> [cls] + patches + learned position embedding
          -> N x (x + MSA(LN(x)); x + MLP(LN(x)))  -> LN -> Linear on the cls token

`PRESETS` is the one table of sizes. `vit` is the ViT-CIFAR network (about 6.3M parameters).

Two small details of the original ViT-CIFAR code differ from the standard ViT, and both are
kept behind `maths="original"`:
  * attention scores divided by sqrt(hidden) instead of sqrt(head dim), which makes the softmax
    much flatter (12 heads: scores are sqrt(12) = 3.5x smaller);
  * a GELU after the MLP's output layer, so each residual branch adds only values >= -0.17.
The published ViT-CIFAR numbers were produced with the original maths; the default here is
the standard maths.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

# Sizes per preset. `vit` is ViT-CIFAR; the others are the DeiT sizes with 4x4 patches.
PRESETS = {
    "vit": dict(num_layers=7, hidden=384, mlp_hidden=384, head=12),
    "vit_tiny": dict(num_layers=12, hidden=192, mlp_hidden=768, head=3),
    "vit_small": dict(num_layers=12, hidden=384, mlp_hidden=1536, head=6),
    "vit_base": dict(num_layers=12, hidden=768, mlp_hidden=3072, head=12),
}
MATHS = ("standard", "original")


class Attention(nn.Module):
    def __init__(self, hidden, head, dropout=0.0, maths="standard"):
        super().__init__()
        self.head = head
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)
        # None lets SDPA use 1/sqrt(head dim); the original code divided by sqrt(hidden).
        self.scale = hidden ** -0.5 if maths == "original" else None

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.head, d // self.head).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.dropout(self.out(x.transpose(1, 2).reshape(b, n, d)))


class MLP(nn.Sequential):
    def __init__(self, hidden, mlp_hidden, dropout=0.0, maths="standard"):
        layers = [nn.Linear(hidden, mlp_hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_hidden, hidden)]
        if maths == "original":
            layers.append(nn.GELU())
        layers.append(nn.Dropout(dropout))
        super().__init__(*layers)


class Block(nn.Module):
    def __init__(self, hidden, mlp_hidden, head, dropout=0.0, maths="standard"):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden)
        self.attn = Attention(hidden, head, dropout, maths)
        self.norm2 = nn.LayerNorm(hidden)
        self.mlp = MLP(hidden, mlp_hidden, dropout, maths)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(self, num_classes=10, image_size=32, in_chans=3, patch_size=4, num_layers=7, hidden=384,
                 mlp_hidden=384, head=12, dropout=0.0, cls_token=True, maths="standard"):
        super().__init__()
        if maths not in MATHS:
            raise ValueError(f"maths must be one of {MATHS}")
        self.patch_size = patch_size
        num_patches = (image_size // patch_size) ** 2
        self.embed = nn.Linear(patch_size * patch_size * in_chans, hidden)
        self.cls_token = nn.Parameter(torch.randn(1, 1, hidden)) if cls_token else None
        self.pos_embed = nn.Parameter(torch.randn(1, num_patches + int(cls_token), hidden))
        self.blocks = nn.Sequential(*[Block(hidden, mlp_hidden, head, dropout, maths) for _ in range(num_layers)])
        self.head = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, num_classes))

    def patchify(self, x):
        # (B, C, H, W) -> (B, patches, p*p*C), each patch flattened as (row, col, channel) like the original.
        b, c, _, _ = x.shape
        p = self.patch_size
        x = x.unfold(2, p, p).unfold(3, p, p)  # B, C, h, w, p, p
        return x.permute(0, 2, 3, 4, 5, 1).reshape(b, -1, p * p * c)

    def forward(self, x):
        x = self.embed(self.patchify(x))
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.blocks(x + self.pos_embed)
        x = x[:, 0] if self.cls_token is not None else x.mean(dim=1)
        return self.head(x)


def build_vit(num_classes, image_size=32, in_chans=3, *, preset="vit", dropout=0.0, **sizes):
    """Builds a preset; any size given in `sizes` (not None) replaces the preset's value."""
    kwargs = dict(PRESETS[preset])
    known = {"patch_size", "num_layers", "hidden", "mlp_hidden", "head", "cls_token", "maths"}
    kwargs.update({k: v for k, v in sizes.items() if k in known and v is not None})
    return ViT(num_classes=num_classes, image_size=image_size, in_chans=in_chans, dropout=dropout, **kwargs)
