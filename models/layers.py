"""The pieces the transformer models of this package share: the MLP, one Attention module (with
Locality Self-Attention as an option, Lee et al. 2021), CaiT's LayerScale (Touvron et al. 2021), the
pre-norm Block, the patch embedding, the 2-D sin-cos position embedding (Beyer et al. 2022), the
ViT-style init, and the image-size check.

The models (vit_variants, cait, swin, mixer, mobilevit, cct, k47) are written from their papers (in
the style of lucidrains/vit-pytorch), small modules that follow each paper's figure, with the CIFAR
configuration as the default. The transformer blocks all share the one Attention module, built on
`torch.nn.functional.scaled_dot_product_attention` (so the fused flash / memory-efficient kernels are
used on GPU; only k47_cait's talking heads need the softmax written out), and vit.py's DropPath for
stochastic depth (Huang et al. 2016, arXiv:1603.09382).

Conventions shared by the builders, `build_<name>(num_classes, image_size=32, in_chans=3, *, dropout,
drop_path, <sizes>)`, each registered with models.register_model where it is defined:
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
import torch
import torch.nn as nn
import torch.nn.functional as F

from vit import DropPath


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


def init_transformer(m):
    """ViT-style init: truncated normal(0.02) Linear weights, zero biases, unit norms."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def check_divisible(image_size, stride, name):
    if image_size % stride:
        raise ValueError(f"{name}: image_size {image_size} must be a multiple of {stride}")


PATCHES = dict(multiple="patch_size")  # whole patches: multiples of the patch_size option
