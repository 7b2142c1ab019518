"""The zoo's configurable pre-norm ViT (`ViT`), and the paper variants built from it:

  simple_vit     Beyer, Zhai & Kolesnikov 2022, "Better plain ViT baselines for ImageNet-1k"
                 (arXiv:2205.01580): fixed 2-D sin-cos position embedding, no class token,
                 global average pooling.
  vit_spt_lsa    Lee, Lee & Song 2021, "Vision Transformer for Small-Size Datasets"
                 (arXiv:2112.13492): Shifted Patch Tokenization + Locality Self-Attention.
  vit_dyt        Zhu, Chen, He, LeCun & Liu 2025, "Transformers without Normalization"
                 (arXiv:2503.10622): every LayerNorm of a pre-norm ViT replaced by DynamicTanh.

The same class builds kentaroy47's lucidrains ViTs (models/k47.py). Locality Self-Attention is the
`lsa` option of models.layers.Attention, the sin-cos embedding models.layers.posemb_sincos_2d.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from models import register_model
from models.layers import PATCHES, Block, PatchEmbed, check_divisible, init_transformer, posemb_sincos_2d
from vit import drop_path_rates, patchify


class DynamicTanh(nn.Module):
    """DyT (Zhu et al. 2025): y = gamma * tanh(alpha * x) + beta, a drop-in replacement for LayerNorm.

    alpha is one learnable scalar (init 0.5 for ViTs) that squashes extreme activations the way
    LayerNorm's S-shaped input-output map does, without computing any statistics.
    """

    def __init__(self, dim, alpha_init=0.5):
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor(float(alpha_init)))
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        return self.weight * torch.tanh(self.alpha * x) + self.bias


class ShiftedPatchTokenization(nn.Module):
    """SPT (Lee et al. 2021): widen each token's receptive field before patchifying.

    Four shifted copies of the image (zero fill) are concatenated with the input on the channel
    axis, so each p x p patch also sees its neighbours' pixels. Then patchify -> LayerNorm -> Linear.
    shifts: None for the paper's, half a patch along the four diagonals; or four (dy, dx) pixel
    offsets (kentaroy47 / lucidrains: one pixel right, left, down, up: K47_SPT_SHIFTS).
    """

    def __init__(self, in_chans, dim, patch_size, shifts=None):
        super().__init__()
        self.patch_size = patch_size
        self.shifts = shifts if shifts is not None else patch_size // 2
        patch_dim = 5 * in_chans * patch_size * patch_size
        self.norm = nn.LayerNorm(patch_dim)
        self.proj = nn.Linear(patch_dim, dim)

    @staticmethod
    def with_shifts(x, shifts):
        """(B, C, H, W) -> (B, 5C, H, W): the input and its shifted copies, out[i, j] = x[i - dy, j - dx].

        An int s stands for the four diagonal shifts by s pixels: right-down, left-down, right-up, left-up.
        """
        if isinstance(shifts, int):
            shifts = [(shifts, shifts), (shifts, -shifts), (-shifts, shifts), (-shifts, -shifts)]
        H, W = x.shape[-2:]
        m = max(max(abs(dy), abs(dx)) for dy, dx in shifts)
        padded = F.pad(x, (m, m, m, m))
        shifted = [padded[:, :, m - dy:m - dy + H, m - dx:m - dx + W] for dy, dx in shifts]
        return torch.cat([x, *shifted], dim=1)

    def forward(self, x):
        x = self.with_shifts(x, self.shifts)
        return self.proj(self.norm(patchify(x, self.patch_size)))


class ViT(nn.Module):
    """A pre-norm ViT with the options the zoo's ViT variants need.

        image -> patch tokens (+ cls) + position embedding -> depth x Block -> norm -> pool -> Linear

    pool: "cls" (class token, learned position embedding over cls + patches) or "mean" (global
    average pooling). pos: "learned" or "sincos" (fixed, patches only, needs pool="mean").
    spt / lsa: Shifted Patch Tokenization (with `spt_shifts`) / Locality Self-Attention (with its
    `temperature` kind). norm: LayerNorm or DynamicTanh.
    The rest is for lucidrains' variants (k47_*): `proj_bias` of the attention output;
    `emb_dropout` after the position embedding; `head_dropout` before the classifier (None: `dropout`);
    `norm_after_pool` normalises the pooled vector instead of every token (the same for pool="cls",
    not for "mean"); init "trunc_normal" (timm's ViT init: truncated normal(0.02) weights, zero
    biases) or "torch" (PyTorch's default layer init, cls token and position embedding ~ N(0, 1)).
    """

    def __init__(self, *, num_classes, image_size, in_chans, patch_size, dim, depth, heads, dim_head, mlp_dim,
                 pool="cls", pos="learned", spt=False, spt_shifts=None, lsa=False, temperature="per_head",
                 norm=nn.LayerNorm, qkv_bias=True, proj_bias=True, dropout=0.0, attn_dropout=0.0, drop_path=0.0,
                 emb_dropout=0.0, head_dropout=None, norm_after_pool=False, init="trunc_normal"):
        super().__init__()
        check_divisible(image_size, patch_size, "ViT")
        if pos == "sincos" and pool != "mean":
            raise ValueError("the fixed sin-cos embedding covers patches only: use pool='mean'")
        if init not in ("trunc_normal", "torch"):
            raise ValueError(f"init must be 'trunc_normal' or 'torch', got {init!r}")
        grid = image_size // patch_size
        if spt:
            self.patch_embed = ShiftedPatchTokenization(in_chans, dim, patch_size, spt_shifts)
        else:
            self.patch_embed = PatchEmbed(in_chans, dim, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if pool == "cls" else None
        if pos == "sincos":
            # a buffer, not a parameter: fixed, and recomputed from the image size rather than saved
            self.register_buffer("pos_embed", posemb_sincos_2d(grid, grid, dim)[None], persistent=False)
        else:
            self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + (pool == "cls"), dim))
            if init == "trunc_normal":
                nn.init.trunc_normal_(self.pos_embed, std=0.02)
            else:
                nn.init.normal_(self.pos_embed)
        if init == "torch" and self.cls_token is not None:
            nn.init.normal_(self.cls_token)
        self.pos_drop = nn.Dropout(emb_dropout)
        self.blocks = nn.Sequential(*[
            Block(dim, heads, dim_head, mlp_dim, norm=norm, qkv_bias=qkv_bias, proj_bias=proj_bias, lsa=lsa,
                  temperature=temperature, dropout=dropout, attn_dropout=attn_dropout, drop_path=p)
            for p in drop_path_rates(drop_path, depth)])
        self.norm = norm(dim)
        self.norm_after_pool = norm_after_pool
        self.head_drop = nn.Dropout(dropout if head_dropout is None else head_dropout)
        self.head = nn.Linear(dim, num_classes)
        if init == "trunc_normal":  # ("torch": the layers keep PyTorch's default init)
            self.apply(init_transformer)

    def forward(self, x):
        x = self.patch_embed(x)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.blocks(self.pos_drop(x + self.pos_embed))
        if not self.norm_after_pool:
            x = self.norm(x)
        x = x[:, 0] if self.cls_token is not None else x.mean(dim=1)
        if self.norm_after_pool:
            x = self.norm(x)
        return self.head(self.head_drop(x))


@register_model("simple_vit", about="SimpleViT (Beyer et al. 2022): sin-cos positions, mean pooling; dim 384, "
                                    "depth 7, 6 heads, MLP 1536", sizes=PATCHES)
def build_simple_vit(num_classes: int, image_size: int = 32, in_chans: int = 3, *, dropout: float = 0.0,
                     drop_path: float = 0.0, patch_size: int = 4, dim: int = 384, depth: int = 7, heads: int = 6,
                     mlp_dim: int = 1536, attn_dropout: float = 0.0) -> nn.Module:
    """SimpleViT (Beyer et al. 2022): patch 4, dim 384, depth 7, heads 6 (head dim 64), MLP 1536.

    Fixed 2-D sin-cos position embedding, no class token, global average pooling, LayerNorm ->
    Linear head. The head is not zero-initialised as in big_vision, so that gradients reach the
    whole network from the first step.
    """
    return ViT(num_classes=num_classes, image_size=image_size, in_chans=in_chans, patch_size=patch_size,
               dim=dim, depth=depth, heads=heads, dim_head=dim // heads, mlp_dim=mlp_dim, pool="mean",
               pos="sincos", dropout=dropout, attn_dropout=attn_dropout, drop_path=drop_path)


@register_model("vit_spt_lsa", about="ViT with Shifted Patch Tokenization + Locality Self-Attention (Lee et al. "
                                     "2021), its CIFAR size: dim 192, depth 9, 12 heads of 16, MLP 384",
                sizes=PATCHES)
def build_vit_spt_lsa(num_classes: int, image_size: int = 32, in_chans: int = 3, *, dropout: float = 0.0,
                      drop_path: float = 0.0, patch_size: int = 4, dim: int = 192, depth: int = 9, heads: int = 12,
                      dim_head: int = 16, mlp_dim: int = 384, attn_dropout: float = 0.0) -> nn.Module:
    """ViT with SPT + LSA (Lee et al. 2021), the paper's CIFAR ViT: patch 4, dim 192, depth 9,
    12 heads of dim 16, MLP 384 (ratio 2), class token, learned position embedding.

    As in the official code: qkv without bias, one learnable temperature per head, the diagonal
    mask also covers the class token. (The paper trains with drop_path 0.1.)
    """
    return ViT(num_classes=num_classes, image_size=image_size, in_chans=in_chans, patch_size=patch_size,
               dim=dim, depth=depth, heads=heads, dim_head=dim_head, mlp_dim=mlp_dim, pool="cls", pos="learned",
               spt=True, lsa=True, qkv_bias=False, dropout=dropout, attn_dropout=attn_dropout, drop_path=drop_path)


@register_model("vit_dyt", about="ViT-CIFAR size (standard maths) with DynamicTanh instead of LayerNorm "
                                 "(Zhu et al. 2025)", sizes=PATCHES)
def build_vit_dyt(num_classes: int, image_size: int = 32, in_chans: int = 3, *, dropout: float = 0.0,
                  drop_path: float = 0.0, patch_size: int = 4, dim: int = 384, depth: int = 7, heads: int = 12,
                  mlp_dim: int = 384, alpha_init: float = 0.5, attn_dropout: float = 0.0) -> nn.Module:
    """Pre-norm ViT with every LayerNorm replaced by DynamicTanh (Zhu et al. 2025), at the
    ViT-CIFAR size: patch 4, dim 384, depth 7, 12 heads (head dim 32), MLP 384, class token,
    learned position embedding. alpha is initialised to 0.5 (the paper's value for ViTs)."""

    def norm(d):
        return DynamicTanh(d, alpha_init)

    return ViT(num_classes=num_classes, image_size=image_size, in_chans=in_chans, patch_size=patch_size,
               dim=dim, depth=depth, heads=heads, dim_head=dim // heads, mlp_dim=mlp_dim, pool="cls",
               pos="learned", norm=norm, dropout=dropout, attn_dropout=attn_dropout, drop_path=drop_path)
