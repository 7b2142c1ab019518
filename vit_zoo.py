"""Transformer and mixer models sized for 32x32 images (CIFAR): the zoo next to the base ViT of vit.py.

Every network here is built by `build_<name>(num_classes, image_size=32, in_chans=3, *, dropout,
drop_path, <sizes>)` and registered with models.register_model where it is defined. The models are
written from their papers (in the style of lucidrains/vit-pytorch), small modules that follow each
paper's figure, with the CIFAR configuration as the default:

  simple_vit     Beyer, Zhai & Kolesnikov 2022, "Better plain ViT baselines for ImageNet-1k"
                 (arXiv:2205.01580): fixed 2-D sin-cos position embedding, no class token,
                 global average pooling.
  vit_spt_lsa    Lee, Lee & Song 2021, "Vision Transformer for Small-Size Datasets"
                 (arXiv:2112.13492): Shifted Patch Tokenization + Locality Self-Attention.
  vit_dyt        Zhu, Chen, He, LeCun & Liu 2025, "Transformers without Normalization"
                 (arXiv:2503.10622): every LayerNorm of a pre-norm ViT replaced by DynamicTanh.
  cait           Touvron, Cord, Sablayrolles, Synnaeve & Jegou 2021, "Going deeper with Image
                 Transformers" (arXiv:2103.17239): LayerScale + class-attention layers.
  swin_t         Liu et al. 2021, "Swin Transformer: Hierarchical Vision Transformer using Shifted
                 Windows" (arXiv:2103.14030), built from torchvision's Swin components.
  mlp_mixer      Tolstikhin et al. 2021, "MLP-Mixer: An all-MLP Architecture for Vision"
                 (arXiv:2105.01601).
  convmixer      Trockman & Kolter 2022, "Patches Are All You Need?" (arXiv:2201.09792).
  mobilevit_xxs  Mehta & Rastegari 2022, "MobileViT: Light-weight, General-purpose, and
                 Mobile-friendly Vision Transformer" (arXiv:2110.02178).
  cct_7_3x1      Hassani et al. 2021, "Escaping the Big Data Paradigm with Compact Transformers"
                 (arXiv:2104.05704).
  vit_lite_7_4   the same paper's ViT-Lite: 4x4 patches, class token, CCT's encoder layers.
  cvt_7_4        the same paper's CVT: ViT-Lite with sequence pooling instead of the class token.

and, under the prefix `k47_`, the `--net` models of kentaroy47/vision-transformers-cifar10 at
that repository's sizes (its defaults: --patch 4, --dimhead 512, --convkernel 8, 32x32), for its
users: k47_vit, k47_vit_small, k47_vit_tiny, k47_simplevit, k47_cait, k47_cait_small,
k47_convmixer. Its transformers are lucidrains/vit-pytorch's; each k47 builder says where ours
differs. Its `vit`, `vit_small`, `vit_tiny`, `cait` and `convmixer` are not the networks our
names `vit` (ViT-CIFAR), `vit_small` / `vit_tiny` (DeiT sizes), `cait` (CaiT-XXS24) and
`convmixer` (ConvMixer-256/8) are; the model table says so on both rows.

The transformer blocks all share one Attention module built on
`torch.nn.functional.scaled_dot_product_attention` (so the fused flash / memory-efficient kernels are
used on GPU; only k47_cait's talking heads need the softmax written out), and vit.py's DropPath for
stochastic depth (Huang et al. 2016, arXiv:1603.09382).

Conventions shared by the builders:
  * `dropout` is applied before the classifier, and also where the paper's reference code puts its
    dropout (the transformer MLPs, and CCT's embedding); `attn_dropout` (default 0) drops
    attention weights. (k47: where lucidrains' `dropout` goes, and no dropout before the head.)
  * `drop_path` is the stochastic-depth rate of the last block, rising linearly from 0 over the depth
    (CaiT: the same rate in every block, as in its paper).
  * Every size is an explicit keyword of the builder, so it is an option of the model; there is no
    **kwargs: an option a model does not have is refused (models.build_model says which models take it).
  * `image_size` must be a multiple of the model's total stride (patch 4 for the ViTs: 32, 64, ...),
    as declared with each registration.

Deviations from the papers, all for 32x32 inputs or for the SDPA kernel, are listed in each
builder's docstring.
"""
import functools

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.swin_transformer import ShiftedWindowAttention, SwinTransformer, SwinTransformerBlock

from models import register_model
from vit import DropPath, drop_path_rates, patchify  # noqa: F401 (DropPath and patchify are also used by callers)


# --------------------------------------------------------------------------- shared pieces


class FeedForward(nn.Sequential):
    """The transformer MLP: Linear -> act -> Dropout -> Linear -> Dropout."""

    def __init__(self, dim, hidden_dim, dropout=0.0, act=nn.GELU):
        super().__init__(nn.Linear(dim, hidden_dim), act(), nn.Dropout(dropout),
                         nn.Linear(hidden_dim, dim), nn.Dropout(dropout))


class Attention(nn.Module):
    """Multi-head self-attention through `F.scaled_dot_product_attention`.

    With `lsa=True` it is Locality Self-Attention (Lee et al. 2021): the fixed 1/sqrt(d) is replaced
    by a learnable temperature, and each token's score with itself is masked to -inf, so attention
    goes to the *other* tokens instead of being dominated by the self-similarity q_i . k_i.
    `temperature`: "per_head" (the paper's code: one learnable scale per head, initialised to
    1/sqrt(d)) or "shared_log" (lucidrains' vit_for_small_dataset: one scale for all heads, learned
    as its logarithm, initialised to log(1/sqrt(d))).
    """

    def __init__(self, dim, heads=8, dim_head=None, *, qkv_bias=True, proj_bias=True, lsa=False,
                 temperature="per_head", attn_dropout=0.0, dropout=0.0):
        super().__init__()
        dim_head = dim_head or dim // heads
        self.heads, self.dim_head = heads, dim_head
        self.qkv = nn.Linear(dim, 3 * heads * dim_head, bias=qkv_bias)
        self.proj = nn.Linear(heads * dim_head, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(dropout)
        self.attn_dropout = attn_dropout
        self.lsa = lsa
        if lsa:
            if temperature not in ("per_head", "shared_log"):
                raise ValueError(f"temperature must be 'per_head' or 'shared_log', got {temperature!r}")
            self.log_temperature = temperature == "shared_log"
            init = torch.full((heads,) if temperature == "per_head" else (), dim_head ** -0.5)
            self.temperature = nn.Parameter(init.log() if self.log_temperature else init)

    def scale(self):
        """The LSA temperature as a (heads,) or () tensor."""
        return self.temperature.exp() if self.log_temperature else self.temperature

    def attend(self, q, k, v):
        """softmax(q k^T * scale [+ mask]) v for q, k, v of shape (B, heads, N, dim_head)."""
        drop = self.attn_dropout if self.training else 0.0
        if not self.lsa:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=drop)  # scale = 1/sqrt(dim_head)
        # SDPA's `scale` is one float, so the learnable temperature is applied to q instead;
        # cast so that under autocast q keeps the dtype of k and v.
        t = self.scale().to(q.dtype)
        q = q * (t.view(1, -1, 1, 1) if t.ndim else t)
        idx = torch.arange(q.shape[-2], device=q.device)
        not_self = idx[:, None] != idx[None, :]  # False on the diagonal = -inf (not torch.eye: ONNX-friendly)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=not_self, dropout_p=drop, scale=1.0)

    def forward(self, x):
        B, N, _ = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, self.dim_head).permute(2, 0, 3, 1, 4)
        x = self.attend(q, k, v).transpose(1, 2).reshape(B, N, -1)
        return self.proj_drop(self.proj(x))


class LayerScale(nn.Module):
    """CaiT's per-channel residual-branch gain, initialised small so each block starts near identity."""

    def __init__(self, dim, init=1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x):
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block: x + MSA(norm(x)), then x + MLP(norm(x))."""

    def __init__(self, dim, heads, dim_head, mlp_dim, *, norm=nn.LayerNorm, act=nn.GELU, qkv_bias=True,
                 proj_bias=True, lsa=False, temperature="per_head", dropout=0.0, attn_dropout=0.0, drop_path=0.0,
                 layer_scale=None):
        super().__init__()
        self.norm1 = norm(dim)
        self.attn = Attention(dim, heads, dim_head, qkv_bias=qkv_bias, proj_bias=proj_bias, lsa=lsa,
                              temperature=temperature, attn_dropout=attn_dropout, dropout=dropout)
        self.ls1 = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()
        self.norm2 = norm(dim)
        self.mlp = FeedForward(dim, mlp_dim, dropout, act)
        self.ls2 = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        x = x + self.drop_path(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> Linear (as a strided conv) -> tokens (B, N, dim)."""

    def __init__(self, in_chans, dim, patch_size):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


def posemb_sincos_2d(h, w, dim, temperature=10000.0):
    """Fixed 2-D sin-cos position embedding (h*w, dim): [sin(x w), cos(x w), sin(y w), cos(y w)].

    A quarter of the channels per (axis, function), frequencies w_i = temperature^(-i / (dim/4 - 1)),
    as in big_vision / "Better plain ViT baselines". Position (0, 0) is sin = 0, cos = 1.
    """
    if dim % 4:
        raise ValueError(f"sin-cos embedding needs dim divisible by 4, got {dim}")
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    omega = 1.0 / temperature ** (torch.arange(dim // 4) / (dim // 4 - 1))
    y = y.flatten()[:, None] * omega[None, :]
    x = x.flatten()[:, None] * omega[None, :]
    return torch.cat((x.sin(), x.cos(), y.sin(), y.cos()), dim=1).float()


def _init_transformer(m):
    """ViT-style init: truncated normal(0.02) Linear weights, zero biases, unit norms."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def _check_divisible(image_size, stride, name):
    if image_size % stride:
        raise ValueError(f"{name}: image_size {image_size} must be a multiple of {stride}")


# --------------------------------------------------------------------------- ViT variants


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
        _check_divisible(image_size, patch_size, "ViT")
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
            self.apply(_init_transformer)

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


_PATCHES = dict(multiple="patch_size")  # whole patches: multiples of the patch_size option


@register_model("simple_vit", about="SimpleViT (Beyer et al. 2022): sin-cos positions, mean pooling; dim 384, "
                                    "depth 7, 6 heads, MLP 1536", sizes=_PATCHES)
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
                sizes=_PATCHES)
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
                                 "(Zhu et al. 2025)", sizes=_PATCHES)
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


# --------------------------------------------------------------------------- CaiT


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
        _check_divisible(image_size, patch_size, "CaiT")
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
        self.apply(_init_transformer)

    def forward(self, x):
        x = self.blocks(self.patch_embed(x) + self.pos_embed)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        for blk in self.cls_blocks:
            cls = blk(cls, x)
        x = self.norm(torch.cat([cls, x], dim=1))
        return self.head(self.head_drop(x[:, 0]))


@register_model("cait", about="CaiT-XXS24 (Touvron et al. 2021) with 4x4 patches, no talking heads: dim 192, "
                             "24 + 2 class-attention layers, 4 heads; not kentaroy47's cait: see k47_cait",
                sizes=_PATCHES)
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


# --------------------------------------------------------------------------- Swin


def _shift_mask(H, W, window, shift, device):
    """(windows, N, N) additive mask for shifted windows: -100 between tokens that were not
    neighbours before the cyclic shift (they share a window only because of the roll)."""
    region = torch.zeros(H, W, device=device)
    count = 0
    for h in (slice(0, -window[0]), slice(-window[0], -shift[0]), slice(-shift[0], None)):
        for w in (slice(0, -window[1]), slice(-window[1], -shift[1]), slice(-shift[1], None)):
            region[h, w] = count
            count += 1
    region = region.view(H // window[0], window[0], W // window[1], window[1]).permute(0, 2, 1, 3)
    region = region.reshape(-1, window[0] * window[1])
    diff = region[:, None, :] - region[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


class WindowAttentionSDPA(ShiftedWindowAttention):
    """torchvision's (shifted) window attention, same parameters, with the softmax done by SDPA.

    The relative position bias and the shift mask go in as SDPA's additive `attn_mask`.
    """

    def forward(self, x):  # x: (B, H, W, C)
        B, H, W, C = x.shape
        wh, ww = self.window_size
        x = F.pad(x, (0, 0, 0, (-W) % ww, 0, (-H) % wh))  # as torchvision: pad to whole windows
        _, Hp, Wp, _ = x.shape
        shift = [0 if wh >= Hp else self.shift_size[0], 0 if ww >= Wp else self.shift_size[1]]
        if sum(shift):
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        nh, nw = Hp // wh, Wp // ww
        x = x.view(B, nh, wh, nw, ww, C).permute(0, 1, 3, 2, 4, 5).reshape(B * nh * nw, wh * ww, C)

        q, k, v = self.qkv(x).view(x.shape[0], wh * ww, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        mask = self.get_relative_position_bias()  # (1, heads, N, N)
        if sum(shift):
            mask = mask + _shift_mask(Hp, Wp, self.window_size, shift, x.device)[:, None]  # (windows, heads, N, N)
            mask = mask.repeat(B, 1, 1, 1)  # windows are batch-major: row b * windows + w
        drop = self.attention_dropout if self.training else 0.0
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype), dropout_p=drop)
        x = x.transpose(1, 2).reshape(-1, wh * ww, C)
        x = F.dropout(self.proj(x), p=self.dropout, training=self.training)

        x = x.view(B, nh, nw, wh, ww, C).permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, C)
        if sum(shift):
            x = torch.roll(x, shifts=(shift[0], shift[1]), dims=(1, 2))
        return x[:, :H, :W, :].contiguous()


class SwinCIFAR(SwinTransformer):
    """torchvision's SwinTransformer with an `in_chans` stem, SDPA window attention, windows clipped
    to small feature maps, and dropout before the head."""

    def __init__(self, *, num_classes, image_size, in_chans, patch_size, embed_dim, depths, num_heads, window_size,
                 mlp_ratio=4.0, dropout=0.0, attn_dropout=0.0, drop_path=0.0):
        _check_divisible(image_size, patch_size * 2 ** (len(depths) - 1), "Swin")
        grid = image_size // patch_size

        def block(dim, heads, window_size, shift_size, **kw):
            # Stage i has dim = embed_dim * 2^i and side grid / 2^i. Where the window would cover the
            # whole map, clip it to the map and do not shift, as the official Swin code does (at 32x32
            # the last stage is 2x2: torchvision would zero-pad it to a 4x4 window instead).
            side = grid // (dim // embed_dim)
            if side <= min(window_size):
                window_size, shift_size = [side, side], [0, 0]
            return SwinTransformerBlock(dim, heads, window_size, shift_size, attn_layer=WindowAttentionSDPA, **kw)

        # The paper's Swin-T has no dropout inside the blocks, only stochastic depth.
        super().__init__(patch_size=[patch_size, patch_size], embed_dim=embed_dim, depths=list(depths),
                         num_heads=list(num_heads), window_size=[window_size, window_size], mlp_ratio=mlp_ratio,
                         dropout=0.0, attention_dropout=attn_dropout, stochastic_depth_prob=drop_path,
                         num_classes=num_classes, block=block)
        self.features[0][0] = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.head_drop = nn.Dropout(dropout)

    def forward(self, x):
        x = self.norm(self.features(x))  # (B, h, w, C)
        return self.head(self.head_drop(x.mean(dim=(1, 2))))


@register_model("swin_t", about="Swin-T (Liu et al. 2021) for 32x32: patch 2, window 4, dim 96, depths "
                               "(2, 2, 6, 2)",
                sizes=dict(multiple=lambda o: o["patch_size"] * 2 ** (len(o["depths"]) - 1)))
def build_swin_t(num_classes: int, image_size: int = 32, in_chans: int = 3, *, dropout: float = 0.0,
                 drop_path: float = 0.0, patch_size: int = 2, embed_dim: int = 96, depths: tuple = (2, 2, 6, 2),
                 num_heads: tuple = (3, 6, 12, 24), window_size: int = 4, mlp_ratio: float = 4.0,
                 attn_dropout: float = 0.0) -> nn.Module:
    """Swin-T for 32x32: patch 2 (not 4), window 4 (not 7), embed dim 96, depths (2, 2, 6, 2),
    heads (3, 6, 12, 24), MLP ratio 4; the four stages are 16, 8, 4, 2 tokens a side.

    Built from torchvision's Swin blocks and patch merging. At 32x32 stage 3 (4x4) is one unshifted
    window, and stage 4 (2x2) one 2x2 window (smaller relative-position table). The attention runs
    through SDPA (torchvision writes the softmax out).
    """
    return SwinCIFAR(num_classes=num_classes, image_size=image_size, in_chans=in_chans, dropout=dropout,
                     drop_path=drop_path, patch_size=patch_size, embed_dim=embed_dim, depths=depths,
                     num_heads=num_heads, window_size=window_size, mlp_ratio=mlp_ratio, attn_dropout=attn_dropout)


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
        _check_divisible(image_size, patch_size, "MLP-Mixer")
        num_patches = (image_size // patch_size) ** 2
        self.stem = PatchEmbed(in_chans, dim, patch_size)
        self.blocks = nn.Sequential(*[MixerBlock(num_patches, dim, token_mlp_dim, channel_mlp_dim, p)
                                      for p in drop_path_rates(drop_path, depth)])
        self.norm = nn.LayerNorm(dim)
        self.head_drop = nn.Dropout(dropout)
        self.head = nn.Linear(dim, num_classes)
        self.apply(_init_transformer)

    def forward(self, x):
        x = self.norm(self.blocks(self.stem(x))).mean(dim=1)  # global average pooling over patches
        return self.head(self.head_drop(x))


@register_model("mlp_mixer", about="MLP-Mixer (Tolstikhin et al. 2021) for CIFAR: patch 4, dim 512, depth 8",
                sizes=_PATCHES)
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
                                  "patch 2; not kentaroy47's convmixer: see k47_convmixer", sizes=_PATCHES)
def build_convmixer(num_classes: int, image_size: int = 32, in_chans: int = 3, *, dropout: float = 0.0,
                    drop_path: float = 0.0, dim: int = 256, depth: int = 8, kernel_size: int = 5,
                    patch_size: int = 2) -> nn.Module:
    """ConvMixer-256/8 with the paper's CIFAR-10 settings: kernel 5, patch 2 (about 0.59M parameters).
    drop_path (default 0, not in the paper) drops the residual depthwise branch."""
    _check_divisible(image_size, patch_size, "ConvMixer")
    return ConvMixer(num_classes=num_classes, in_chans=in_chans, dropout=dropout, drop_path=drop_path, dim=dim,
                     depth=depth, kernel_size=kernel_size, patch_size=patch_size)


# --------------------------------------------------------------------------- MobileViT


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
        _check_divisible(image_size, stem_stride * 16 * patch_size, "MobileViT")
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


# --------------------------------------------------------------------------- CCT


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
        self.apply(_init_transformer)
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
    _check_divisible(image_size, patch_size, name)  # as the code asserts: no partial patches
    return CCT(num_classes=num_classes, image_size=image_size, in_chans=in_chans, dim=dim, pool=pool,
               tokenizer=PatchEmbed(in_chans, dim, patch_size), **kw)


_LITE = ("Hassani et al. 2021): 4x4 patch conv, 7 CCT encoder layers, dim 256, 4 heads, MLP ratio 2, learned "
         "positions, ")


@register_model("vit_lite_7_4", about="ViT-Lite-7/4 (" + _LITE + "class token", sizes=_PATCHES)
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


@register_model("cvt_7_4", about="CVT-7/4 (" + _LITE + "sequence pooling", sizes=_PATCHES)
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


# --------------------------------------------------------------------------- kentaroy47/vision-transformers-cifar10
#
# Its train_cifar10.py builds lucidrains/vit-pytorch networks (copied into its models/) with
# --patch 4, --dimhead 512 (the width, despite the name), image size 32 and dim_head 64 (lucidrains'
# default, so the attention width is heads * 64, not dim). The names below are its --net names.

# lucidrains' SPT pads (1, -1, 0, 0), (-1, 1, 0, 0), (0, 0, 1, -1), (0, 0, -1, 1): one pixel right,
# left, down, up; as (dy, dx) offsets of ShiftedPatchTokenization.with_shifts.
K47_SPT_SHIFTS = ((0, 1), (0, -1), (1, 0), (-1, 0))


def k47_layer_scale(layer):
    """lucidrains CaiT's LayerScale init for the layer-th layer (from 1) of each of its two stacks:
    0.1 up to 18, 1e-5 up to 24, then 1e-6 (the paper's values by *total* depth, applied per layer)."""
    return 0.1 if layer <= 18 else 1e-5 if layer <= 24 else 1e-6


class TalkingHeadsAttention(nn.Module):
    """lucidrains CaiT's attention: queries from x, keys and values from [x, context] (context None:
    self-attention), and talking heads (Shazeer et al. 2020): the attention logits are mixed across
    heads by a learned heads x heads matrix before the softmax, and the weights by another after it.
    The mixing needs the softmax written out (no SDPA). No biases on q, k, v, as lucidrains."""

    def __init__(self, dim, heads, dim_head, dropout=0.0):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.q = nn.Linear(dim, inner, bias=False)
        self.kv = nn.Linear(dim, 2 * inner, bias=False)
        # N(0, 1) as lucidrains: the heads start fully mixed, not as the identity
        self.mix_pre = nn.Parameter(torch.randn(heads, heads))
        self.mix_post = nn.Parameter(torch.randn(heads, heads))
        self.proj = nn.Linear(inner, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x, context=None):
        B, N, _ = x.shape
        kv = x if context is None else torch.cat([x, context], dim=1)
        h, d = self.heads, self.dim_head
        q = self.q(x).view(B, N, h, d).transpose(1, 2)
        k, v = self.kv(kv).view(B, kv.shape[1], 2, h, d).permute(2, 0, 3, 1, 4)
        dots = torch.einsum("bhij,hg->bgij", (q @ k.transpose(-2, -1)) * d ** -0.5, self.mix_pre)
        attn = torch.einsum("bhij,hg->bgij", dots.softmax(dim=-1), self.mix_post)
        return self.proj_drop(self.proj((attn @ v).transpose(1, 2).reshape(B, N, h * d)))


class K47CaiTLayer(nn.Module):
    """x + LayerScale(attention(norm(x), context)), then x + LayerScale(MLP(norm(x))).

    As lucidrains: in a class-attention layer only x (the class token) is normalised; the patch
    tokens it attends to (the context) enter un-normalised."""

    def __init__(self, dim, heads, dim_head, mlp_dim, layer_scale, dropout=0.0, drop_path=0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = TalkingHeadsAttention(dim, heads, dim_head, dropout)
        self.ls1 = LayerScale(dim, layer_scale)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_dim, dropout)
        self.ls2 = LayerScale(dim, layer_scale)
        self.drop_path = DropPath(drop_path)

    def forward(self, x, context=None):
        x = x + self.drop_path(self.ls1(self.attn(self.norm1(x), context)))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))


class K47CaiT(nn.Module):
    """lucidrains' CaiT: `depth` self-attention layers over the patches (learned position embedding,
    no class token), then `cls_depth` layers in which a class token attends to [itself, patches];
    LayerNorm + Linear on the class token. PyTorch's default init, cls and positions ~ N(0, 1)."""

    def __init__(self, *, num_classes, image_size, in_chans, patch_size, dim, depth, cls_depth, heads, dim_head,
                 mlp_dim, dropout=0.0, emb_dropout=0.0, drop_path=0.0):
        super().__init__()
        _check_divisible(image_size, patch_size, "CaiT")
        self.patch_embed = PatchEmbed(in_chans, dim, patch_size)
        self.pos_embed = nn.Parameter(torch.randn(1, (image_size // patch_size) ** 2, dim))
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_drop = nn.Dropout(emb_dropout)

        def layers(n):
            return nn.ModuleList([K47CaiTLayer(dim, heads, dim_head, mlp_dim, k47_layer_scale(i + 1), dropout,
                                               drop_path) for i in range(n)])

        self.blocks = layers(depth)
        self.cls_blocks = layers(cls_depth)
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))

    def forward(self, x):
        x = self.pos_drop(self.patch_embed(x) + self.pos_embed)
        for blk in self.blocks:
            x = blk(x)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        for blk in self.cls_blocks:
            cls = blk(cls, context=x)
        return self.head(cls[:, 0])


def _k47_vit(num_classes, image_size, in_chans, *, spt, **kw):
    """lucidrains' ViT / vit_for_small_dataset as the zoo's ViT: class token, learned positions, no bias on
    q, k, v, dropout in attention output and MLP, no dropout before the head, PyTorch's init."""
    extra = dict(spt=True, spt_shifts=K47_SPT_SHIFTS, lsa=True, temperature="shared_log") if spt else {}
    return ViT(num_classes=num_classes, image_size=image_size, in_chans=in_chans, pool="cls", pos="learned",
               qkv_bias=False, head_dropout=0.0, init="torch", **extra, **kw)


@register_model("k47_vit", about="kentaroy47 `--net vit`: lucidrains ViT, dim 512, depth 6, 8 heads x 64, MLP 512, "
                                 "dropout 0.1; not our vit (ViT-CIFAR)", sizes=_PATCHES)
def build_k47_vit(num_classes: int, image_size: int = 32, in_chans: int = 3, *, dropout: float = 0.1,
                  emb_dropout: float = 0.1, drop_path: float = 0.0, patch_size: int = 4, dim: int = 512,
                  depth: int = 6, heads: int = 8, dim_head: int = 64, mlp_dim: int = 512) -> nn.Module:
    """kentaroy47's `--net vit`: lucidrains' ViT(dim=512, depth=6, heads=8, mlp_dim=512, dropout=0.1,
    emb_dropout=0.1) with dim_head 64, patch 4: 9.52M parameters at 10 classes. Class token and
    learned positions ~ N(0, 1), no bias on q, k, v, PyTorch's default init.

    Where ours differs from theirs (none of it changes the parameter count): attention through
    SDPA (the same maths); the patch Linear is a stride-p conv (the same map on the same patches,
    and PyTorch's default init draws both from the same distribution); the head's LayerNorm is
    applied to every token before the class token is taken (the same output); `drop_path`
    (stochastic depth, default 0) is ours; in_chans other than 3 is allowed.
    """
    return _k47_vit(num_classes, image_size, in_chans, spt=False, patch_size=patch_size, dim=dim, depth=depth,
                    heads=heads, dim_head=dim_head, mlp_dim=mlp_dim, dropout=dropout, emb_dropout=emb_dropout,
                    drop_path=drop_path)

_K47_SMALL = ("lucidrains ViT for small datasets (1-pixel shifted patch tokens + LSA), dim 512, depth {}, "
              "{} heads x 64, MLP {}, dropout 0.1; not our DeiT-size {}")


@register_model("k47_vit_small", about="kentaroy47 `--net vit_small`: " + _K47_SMALL.format(6, 8, 512, "vit_small"),
                sizes=_PATCHES)
def build_k47_vit_small(num_classes: int, image_size: int = 32, in_chans: int = 3, *, dropout: float = 0.1,
                        emb_dropout: float = 0.1, drop_path: float = 0.0, patch_size: int = 4, dim: int = 512,
                        depth: int = 6, heads: int = 8, dim_head: int = 64, mlp_dim: int = 512) -> nn.Module:
    """kentaroy47's `--net vit_small`: lucidrains' vit_for_small_dataset ViT(dim=512, depth=6, heads=8,
    mlp_dim=512, dropout=0.1, emb_dropout=0.1), dim_head 64, patch 4: 9.62M parameters at 10 classes.

    Shifted patch tokens: the image and four copies shifted by ONE pixel right, left, down and up
    (not the paper's half patch along the diagonals, as vit_spt_lsa) -> patches -> LayerNorm ->
    Linear. Locality self-attention: the diagonal masked, and ONE learned temperature for all
    heads, kept as its logarithm (init log(1/8)), where the paper's code has one per head.

    Where ours differs from theirs: the diagonal is masked with -inf where theirs fills the most
    negative float (the same softmax); attention through SDPA; the head's LayerNorm is applied to
    every token before the class token is taken (the same output); `drop_path` (default 0) is ours.
    """
    return _k47_vit(num_classes, image_size, in_chans, spt=True, patch_size=patch_size, dim=dim, depth=depth,
                    heads=heads, dim_head=dim_head, mlp_dim=mlp_dim, dropout=dropout, emb_dropout=emb_dropout,
                    drop_path=drop_path)


@register_model("k47_vit_tiny", about="kentaroy47 `--net vit_tiny`: " + _K47_SMALL.format(4, 6, 256, "vit_tiny"),
                sizes=_PATCHES)
def build_k47_vit_tiny(num_classes: int, image_size: int = 32, in_chans: int = 3, *, dropout: float = 0.1,
                       emb_dropout: float = 0.1, drop_path: float = 0.0, patch_size: int = 4, dim: int = 512,
                       depth: int = 4, heads: int = 6, dim_head: int = 64, mlp_dim: int = 256) -> nn.Module:
    """kentaroy47's `--net vit_tiny`: k47_vit_small's network with depth 4, heads 6 (x 64 = 384 wide
    attention in a 512 wide model), mlp_dim 256: 4.37M parameters at 10 classes."""
    return build_k47_vit_small(num_classes, image_size, in_chans, dropout=dropout, emb_dropout=emb_dropout,
                               drop_path=drop_path, patch_size=patch_size, dim=dim, depth=depth, heads=heads,
                               dim_head=dim_head, mlp_dim=mlp_dim)


@register_model("k47_simplevit", about="kentaroy47 `--net simplevit`: lucidrains SimpleViT, dim 512, depth 6, "
                                       "8 heads x 64, MLP 512", sizes=_PATCHES)
def build_k47_simplevit(num_classes: int, image_size: int = 32, in_chans: int = 3, *, dropout: float = 0.0,
                        drop_path: float = 0.0, patch_size: int = 4, dim: int = 512, depth: int = 6, heads: int = 8,
                        dim_head: int = 64, mlp_dim: int = 512) -> nn.Module:
    """kentaroy47's `--net simplevit`: lucidrains' SimpleViT(dim=512, depth=6, heads=8, mlp_dim=512),
    dim_head 64, patch 4: 9.49M parameters at 10 classes.

    The version in that repository: 2-D sin-cos positions, no class token, pre-norm blocks with no
    bias on q, k, v nor on the attention output, no final LayerNorm in the transformer: the tokens
    are averaged, then LayerNorm -> Linear. (This differs from our simple_vit: 384 wide, head dim
    dim / heads, biases, LayerNorm before the pooling.) PyTorch's default init.

    Where ours differs from theirs: attention through SDPA; the patch Linear is a stride-p conv (the
    same map); theirs has no dropout at all: `dropout` and `drop_path` are ours, 0 by default
    (dropout goes in the attention output and the MLP, never before the head).
    """
    return ViT(num_classes=num_classes, image_size=image_size, in_chans=in_chans, patch_size=patch_size, dim=dim,
               depth=depth, heads=heads, dim_head=dim_head, mlp_dim=mlp_dim, pool="mean", pos="sincos",
               qkv_bias=False, proj_bias=False, norm_after_pool=True, dropout=dropout, head_dropout=0.0,
               drop_path=drop_path, init="torch")


@register_model("k47_cait", about="kentaroy47 `--net cait`: lucidrains CaiT with talking heads, dim 512, 6 + 2 "
                                  "class-attention layers, 8 heads x 64, MLP 512; not our cait (CaiT-XXS24)",
                sizes=_PATCHES)
def build_k47_cait(num_classes: int, image_size: int = 32, in_chans: int = 3, *, dropout: float = 0.1,
                   emb_dropout: float = 0.1, drop_path: float = 0.05, patch_size: int = 4, dim: int = 512,
                   depth: int = 6, cls_depth: int = 2, heads: int = 8, dim_head: int = 64,
                   mlp_dim: int = 512) -> nn.Module:
    """kentaroy47's `--net cait`: lucidrains' CaiT(dim=512, depth=6, cls_depth=2, heads=8, mlp_dim=512,
    dropout=0.1, emb_dropout=0.1, layer_dropout=0.05), dim_head 64, patch 4: 12.69M parameters at
    10 classes. (lucidrains' README example has heads=16; kentaroy47's train_cifar10.py passes 8.)

    Unlike our cait (CaiT-XXS24 without talking heads): talking-heads attention, LayerScale 0.1 in
    every layer (lucidrains' rule by layer index), q / k / v without bias, the class-attention
    layers normalise only the class token, and no final norm over all tokens (LayerNorm -> Linear on
    the class token).

    Where ours differs from theirs: `layer_dropout` 0.05 is our `drop_path` 0.05 in every layer:
    each residual branch dropped per sample and rescaled by 1/keep, in training only. Theirs draws,
    per batch, whole layers to skip (without rescaling) - in eval mode as well, which makes its
    evaluation random. in_chans other than 3 is allowed (theirs hard-codes 3).
    """
    return K47CaiT(num_classes=num_classes, image_size=image_size, in_chans=in_chans, patch_size=patch_size,
                   dim=dim, depth=depth, cls_depth=cls_depth, heads=heads, dim_head=dim_head, mlp_dim=mlp_dim,
                   dropout=dropout, emb_dropout=emb_dropout, drop_path=drop_path)


@register_model("k47_cait_small", about="kentaroy47 `--net cait_small`: lucidrains CaiT with talking heads, dim 512, "
                                        "6 + 2 class-attention layers, 6 heads x 64, MLP 256", sizes=_PATCHES)
def build_k47_cait_small(num_classes: int, image_size: int = 32, in_chans: int = 3, *, dropout: float = 0.1,
                         emb_dropout: float = 0.1, drop_path: float = 0.05, patch_size: int = 4, dim: int = 512,
                         depth: int = 6, cls_depth: int = 2, heads: int = 6, dim_head: int = 64,
                         mlp_dim: int = 256) -> nn.Module:
    """kentaroy47's `--net cait_small`: k47_cait's network with heads 6 (x 64 = 384 wide attention in a
    512 wide model) and mlp_dim 256: 8.49M parameters at 10 classes."""
    return build_k47_cait(num_classes, image_size, in_chans, dropout=dropout, emb_dropout=emb_dropout,
                          drop_path=drop_path, patch_size=patch_size, dim=dim, depth=depth, cls_depth=cls_depth,
                          heads=heads, dim_head=dim_head, mlp_dim=mlp_dim)


@register_model("k47_convmixer", about="kentaroy47 `--net convmixer`: ConvMixer-256/16, kernel 8, patch 1; not our "
                                       "convmixer (256/8, kernel 5, patch 2)", sizes=_PATCHES)
def build_k47_convmixer(num_classes: int, image_size: int = 32, in_chans: int = 3, *, dropout: float = 0.0,
                        drop_path: float = 0.0, dim: int = 256, depth: int = 16, kernel_size: int = 8,
                        patch_size: int = 1) -> nn.Module:
    """kentaroy47's `--net convmixer` (its --convkernel 8): ConvMixer(256, 16, kernel_size=8, patch_size=1),
    1.34M parameters at 10 classes: the paper's listing, as our convmixer, at another size. The
    depthwise convs pad "same" (asymmetric for the even kernel, as theirs).

    Where ours differs from theirs: `dropout` before the head and `drop_path` on the residual
    branch are ours, 0 by default (theirs has neither); in_chans other than 3 is allowed.
    """
    return build_convmixer(num_classes, image_size, in_chans, dropout=dropout, drop_path=drop_path, dim=dim,
                           depth=depth, kernel_size=kernel_size, patch_size=patch_size)
