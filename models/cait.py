"""CaiT-XXS24 for 32x32 (`cait`): Touvron, Cord, Sablayrolles, Synnaeve & Jegou 2021, "Going deeper
with Image Transformers" (arXiv:2103.17239): LayerScale + class-attention layers.

kentaroy47's (lucidrains') CaiT, with talking heads, is k47_cait in models/k47.py.
"""
import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from models import register_model
from models.layers import PATCHES, Block, FeedForward, LayerScale, PatchEmbed, check_divisible, init_transformer
from vit import DropPath


class ClassAttention(nn.Module):
    """CaiT's class attention: only the class token queries; keys and values are [cls, patches]."""

    def __init__(self, dim, heads, *, qkv_bias=True, attn_dropout=0.0, dropout=0.0):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)
        self.attn_dropout = attn_dropout

    def forward(self, x):  # x: (B, 1 + N, C), class token first
        B, N, C = x.shape
        q = self.q(x[:, :1]).view(B, 1, self.heads, C // self.heads).transpose(1, 2)
        k, v = self.kv(x).view(B, N, 2, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_dropout if self.training else 0.0)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, 1, C)))


class ClassAttentionBlock(nn.Module):
    """Updates the class token only: cls + CA(norm([cls, patches])), then cls + MLP(norm(cls))."""

    def __init__(self, dim, heads, mlp_dim, *, dropout=0.0, attn_dropout=0.0, drop_path=0.0, layer_scale=1e-5):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ClassAttention(dim, heads, attn_dropout=attn_dropout, dropout=dropout)
        self.ls1 = LayerScale(dim, layer_scale)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = FeedForward(dim, mlp_dim, dropout)
        self.ls2 = LayerScale(dim, layer_scale)
        self.drop_path = DropPath(drop_path)

    def forward(self, cls, x):
        cls = cls + self.drop_path(self.ls1(self.attn(self.norm1(torch.cat([cls, x], dim=1)))))
        return cls + self.drop_path(self.ls2(self.mlp(self.norm2(cls))))


class CaiT(nn.Module):
    """CaiT: self-attention over patches only (no class token), LayerScale on every residual branch;
    the class token joins at the end, in a few class-attention layers that read the frozen patches."""

    def __init__(self, *, num_classes, image_size, in_chans, patch_size, dim, depth, cls_depth, heads, mlp_ratio,
                 layer_scale, dropout=0.0, attn_dropout=0.0, drop_path=0.0):
        super().__init__()
        check_divisible(image_size, patch_size, "CaiT")
        grid = image_size // patch_size
        mlp_dim = int(dim * mlp_ratio)
        norm = functools.partial(nn.LayerNorm, eps=1e-6)
        self.patch_embed = PatchEmbed(in_chans, dim, patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid, dim))
        self.blocks = nn.Sequential(*[
            Block(dim, heads, dim // heads, mlp_dim, norm=norm, dropout=dropout, attn_dropout=attn_dropout,
                  drop_path=drop_path, layer_scale=layer_scale)
            for _ in range(depth)])
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.cls_blocks = nn.ModuleList([
            ClassAttentionBlock(dim, heads, mlp_dim, dropout=dropout, attn_dropout=attn_dropout,
                                layer_scale=layer_scale)
            for _ in range(cls_depth)])
        self.norm = norm(dim)
        self.head_drop = nn.Dropout(dropout)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(init_transformer)

    def forward(self, x):
        x = self.blocks(self.patch_embed(x) + self.pos_embed)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        for blk in self.cls_blocks:
            cls = blk(cls, x)
        x = self.norm(torch.cat([cls, x], dim=1))
        return self.head(self.head_drop(x[:, 0]))


@register_model("cait", about="CaiT-XXS24 (Touvron et al. 2021) with 4x4 patches, no talking heads: dim 192, "
                             "24 + 2 class-attention layers, 4 heads; not kentaroy47's cait: see k47_cait",
                sizes=PATCHES)
def build_cait(num_classes: int, image_size: int = 32, in_chans: int = 3, *, dropout: float = 0.0,
               drop_path: float = 0.0, patch_size: int = 4, dim: int = 192, depth: int = 24, cls_depth: int = 2,
               heads: int = 4, mlp_ratio: float = 4.0, layer_scale: float = 1e-5,
               attn_dropout: float = 0.0) -> nn.Module:
    """CaiT-XXS24 with 4x4 patches: dim 192, 24 self-attention + 2 class-attention layers, 4 heads
    (head dim 48), MLP ratio 4, LayerScale init 1e-5 (the paper's value for depth 24).

    Talking-heads attention is left out: it mixes the attention logits across heads before the
    softmax, which the fused SDPA kernel cannot do (the paper credits it with a small gain).
    As in the paper, every block gets the same drop_path rate.
    """
    return CaiT(num_classes=num_classes, image_size=image_size, in_chans=in_chans, dropout=dropout,
                drop_path=drop_path, patch_size=patch_size, dim=dim, depth=depth, cls_depth=cls_depth, heads=heads,
                mlp_ratio=mlp_ratio, layer_scale=layer_scale, attn_dropout=attn_dropout)
