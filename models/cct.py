"""The compact transformers of Hassani et al. 2021, "Escaping the Big Data Paradigm with Compact
Transformers" (arXiv:2104.05704), all on one classifier (its code's TransformerClassifier):

  cct_7_3x1      CCT: a convolutional tokenizer, sequence pooling.
  vit_lite_7_4   the same paper's ViT-Lite: 4x4 patches, class token, CCT's encoder layers.
  cvt_7_4        the same paper's CVT: ViT-Lite with sequence pooling instead of the class token.
"""
import torch
import torch.nn as nn

from models import register_model
from models.layers import PATCHES, Attention, FeedForward, PatchEmbed, check_divisible, init_transformer
from vit import DropPath, drop_path_rates


class ConvTokenizer(nn.Module):
    """CCT's tokenizer: n x (conv k x k, stride 1 -> ReLU -> maxpool 3/2) -> flatten to tokens.

    Convolutions instead of patchify give tokens that overlap and keep local structure, which is
    what lets a small transformer train from scratch on small data.
    """

    def __init__(self, in_chans, dim, kernel_size=3, n_conv_layers=1, mid_chans=64):
        super().__init__()
        widths = [in_chans] + [mid_chans] * (n_conv_layers - 1) + [dim]
        self.layers = nn.Sequential(*[
            nn.Sequential(nn.Conv2d(c_in, c_out, kernel_size, stride=max(1, kernel_size // 2 - 1),
                                    padding=max(1, kernel_size // 2), bias=False),
                          nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1))
            for c_in, c_out in zip(widths[:-1], widths[1:])])

    def forward(self, x):
        return self.layers(x).flatten(2).transpose(1, 2)


class CCTBlock(nn.Module):
    """CCT's encoder layer (from its code): x + MSA(LN(x)), then LN, then + MLP without a norm."""

    def __init__(self, dim, heads, mlp_dim, dropout=0.0, attn_dropout=0.0, drop_path=0.0):
        super().__init__()
        self.pre_norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, qkv_bias=False, attn_dropout=attn_dropout, dropout=dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_dim, dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        x = self.norm1(x + self.drop_path(self.attn(self.pre_norm(x))))
        return x + self.drop_path(self.mlp(x))


class SeqPool(nn.Module):
    """Sequence pooling: a learned softmax weighting of the output tokens replaces the class token."""

    def __init__(self, dim):
        super().__init__()
        self.attention_pool = nn.Linear(dim, 1)

    def forward(self, x):  # (B, N, C) -> (B, C)
        w = self.attention_pool(x).softmax(dim=1)  # (B, N, 1)
        return (w.transpose(1, 2) @ x).squeeze(1)


class CCT(nn.Module):
    """The paper's transformer classifier (its code's TransformerClassifier), shared by CCT, CVT and ViT-Lite:

        tokenizer -> tokens (+ class token) + learned position embedding -> depth x CCTBlock -> LayerNorm
        -> SeqPool (pool="seq": CCT, CVT) or the class token (pool="cls": ViT-Lite) -> Linear

    `tokenizer` is a module from images to tokens (B, N, dim): CCT's ConvTokenizer, or for ViT-Lite
    and CVT a non-overlapping patch conv (PatchEmbed). With pool="cls" a class token (zeros) is
    prepended and the position embedding covers it too; with pool="seq" the model has no `cls_token`
    at all (so CCT's state dict is the same as before ViT-Lite and CVT shared this class).
    Init as the code: truncated normal(0.02) Linear weights, position embedding truncated normal(0.2),
    Kaiming-normal tokenizer conv weights (their biases keep PyTorch's default).
    """

    def __init__(self, *, num_classes, image_size, in_chans, dim, depth, heads, mlp_ratio, tokenizer, pool="seq",
                 dropout=0.0, attn_dropout=0.0, drop_path=0.0):
        super().__init__()
        if pool not in ("seq", "cls"):
            raise ValueError(f"pool must be 'seq' or 'cls', got {pool!r}")
        self.tokenizer = tokenizer
        with torch.no_grad():  # the sequence length is whatever the tokenizer makes of this image size
            seq_len = self.tokenizer(torch.zeros(1, in_chans, image_size, image_size)).shape[1]
        if pool == "cls":
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, seq_len + (pool == "cls"), dim))
        self.pos_drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*[CCTBlock(dim, heads, int(dim * mlp_ratio), dropout, attn_dropout, p)
                                      for p in drop_path_rates(drop_path, depth)])
        self.norm = nn.LayerNorm(dim)
        self.pool = SeqPool(dim) if pool == "seq" else None
        self.head_drop = nn.Dropout(dropout)
        self.head = nn.Linear(dim, num_classes)
        self.apply(init_transformer)
        nn.init.trunc_normal_(self.pos_embed, std=0.2)  # CCT's value
        for m in self.tokenizer.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        x = self.tokenizer(x)
        if self.pool is None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.norm(self.blocks(self.pos_drop(x + self.pos_embed)))
        x = x[:, 0] if self.pool is None else self.pool(x)
        return self.head(self.head_drop(x))


@register_model("cct_7_3x1", about="CCT-7/3x1 (Hassani et al. 2021): one 3x3 conv tokenizer, 7 layers, dim 256, "
                                  "sequence pooling", sizes=dict(minimum=1))
def build_cct_7_3x1(num_classes: int, image_size: int = 32, in_chans: int = 3, *, dropout: float = 0.0,
                    drop_path: float = 0.0, dim: int = 256, depth: int = 7, heads: int = 4, mlp_ratio: float = 2.0,
                    kernel_size: int = 3, n_conv_layers: int = 1, attn_dropout: float = 0.0) -> nn.Module:
    """CCT-7/3x1: one 3x3 conv (stride 1, padding 1, no bias) + ReLU + maxpool 3/2 tokenizer
    (256 tokens at 32x32), dim 256, 7 layers, 4 heads, MLP ratio 2, learned position embedding,
    sequence pooling. 3.76M parameters on CIFAR-10, as published.

    The paper's recipe uses stochastic depth 0.1 and attention dropout 0.1: pass drop_path=0.1,
    attn_dropout=0.1 (the defaults here are 0, like every other model of the zoo).
    """
    return CCT(num_classes=num_classes, image_size=image_size, in_chans=in_chans, dropout=dropout,
               drop_path=drop_path, dim=dim, depth=depth, heads=heads, mlp_ratio=mlp_ratio,
               tokenizer=ConvTokenizer(in_chans, dim, kernel_size, n_conv_layers), attn_dropout=attn_dropout)


def _patch_transformer(name, pool, *, num_classes, image_size, in_chans, patch_size, dim, **kw):
    """ViT-Lite (pool "cls") / CVT (pool "seq"): CCT's classifier on non-overlapping patch_size patches."""
    check_divisible(image_size, patch_size, name)  # as the code asserts: no partial patches
    return CCT(num_classes=num_classes, image_size=image_size, in_chans=in_chans, dim=dim, pool=pool,
               tokenizer=PatchEmbed(in_chans, dim, patch_size), **kw)


_LITE = ("Hassani et al. 2021): 4x4 patch conv, 7 CCT encoder layers, dim 256, 4 heads, MLP ratio 2, learned "
         "positions, ")


@register_model("vit_lite_7_4", about="ViT-Lite-7/4 (" + _LITE + "class token", sizes=PATCHES)
def build_vit_lite_7_4(num_classes: int, image_size: int = 32, in_chans: int = 3, *, dropout: float = 0.0,
                       drop_path: float = 0.0, patch_size: int = 4, dim: int = 256, depth: int = 7, heads: int = 4,
                       mlp_ratio: float = 2.0, attn_dropout: float = 0.0) -> nn.Module:
    """ViT-Lite-7/4 (the paper's small-patch ViT; its code's vit_7_4_32): 4x4 patches, dim 256,
    7 layers, 4 heads, MLP ratio 2, class token, learned position embedding over [cls, 64 patches].
    3.717M parameters on CIFAR-10, as published (3,716,874 exactly).

    As its code (src/vit.py: ViTLite on utils/transformers.py's TransformerClassifier), not the
    textbook pre-norm ViT block: the patch embedding is a conv with kernel = stride = patch_size,
    with bias, no activation or pooling; the encoder layers are CCT's (CCTBlock: LayerNorm before
    attention, LayerNorm on the residual stream after it, the MLP without a norm of its own, q / k
    / v without bias); LayerNorm, then the class token, then Linear.

    Its model defaults are attention dropout 0.1 and stochastic depth 0.1 (dropout 0), which its
    recipes keep: pass attn_dropout=0.1, drop_path=0.1 (the defaults here are 0, like every other
    model of the zoo).
    """
    return _patch_transformer("ViT-Lite", "cls", num_classes=num_classes, image_size=image_size, in_chans=in_chans,
                              patch_size=patch_size, dim=dim, depth=depth, heads=heads, mlp_ratio=mlp_ratio,
                              dropout=dropout, attn_dropout=attn_dropout, drop_path=drop_path)


@register_model("cvt_7_4", about="CVT-7/4 (" + _LITE + "sequence pooling", sizes=PATCHES)
def build_cvt_7_4(num_classes: int, image_size: int = 32, in_chans: int = 3, *, dropout: float = 0.0,
                  drop_path: float = 0.0, patch_size: int = 4, dim: int = 256, depth: int = 7, heads: int = 4,
                  mlp_ratio: float = 2.0, attn_dropout: float = 0.0) -> nn.Module:
    """CVT-7/4, Compact Vision Transformer (its code's cvt_7_4_32): vit_lite_7_4 with sequence pooling
    (SeqPool, as CCT) instead of the class token; the position embedding covers the 64 patches only.
    3.717M parameters on CIFAR-10, as published (3,716,619 exactly: SeqPool's Linear(256, 1) where
    ViT-Lite has a class token and its position).

    As its code (src/cvt.py), the model defaults are attention dropout 0.1 and stochastic depth 0.1
    (dropout 0): pass attn_dropout=0.1, drop_path=0.1 for the paper's recipe (the defaults here are 0,
    like every other model of the zoo).
    """
    return _patch_transformer("CVT", "seq", num_classes=num_classes, image_size=image_size, in_chans=in_chans,
                              patch_size=patch_size, dim=dim, depth=depth, heads=heads, mlp_ratio=mlp_ratio,
                              dropout=dropout, attn_dropout=attn_dropout, drop_path=drop_path)
