"""The `--net` models of kentaroy47/vision-transformers-cifar10, under the prefix `k47_`, at
that repository's sizes (its defaults: --patch 4, --dimhead 512, --convkernel 8, 32x32), for its
users: k47_vit, k47_vit_small, k47_vit_tiny, k47_simplevit, k47_cait, k47_cait_small,
k47_convmixer. Its transformers are lucidrains/vit-pytorch's; each k47 builder says where ours
differs. Its `vit`, `vit_small`, `vit_tiny`, `cait` and `convmixer` are not the networks our
names `vit` (ViT-CIFAR), `vit_small` / `vit_tiny` (DeiT sizes), `cait` (CaiT-XXS24) and
`convmixer` (ConvMixer-256/8) are; the model table says so on both rows.

The ViTs are models.vit_variants.ViT with lucidrains' options, k47_convmixer is models.mixer's
ConvMixer; the CaiTs have their own layers here, for the talking heads (Shazeer et al. 2020).
The conventions are the zoo's (models/layers.py), with lucidrains' dropout (see `dropout` there).
"""
import torch
import torch.nn as nn

from models import register_model
from models.layers import PATCHES, FeedForward, LayerScale, PatchEmbed, check_divisible
from models.mixer import build_convmixer
from models.vit_variants import ViT
from vit import DropPath


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
        check_divisible(image_size, patch_size, "CaiT")
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
                                 "dropout 0.1; not our vit (ViT-CIFAR)", sizes=PATCHES)
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
                sizes=PATCHES)
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
                sizes=PATCHES)
def build_k47_vit_tiny(num_classes: int, image_size: int = 32, in_chans: int = 3, *, dropout: float = 0.1,
                       emb_dropout: float = 0.1, drop_path: float = 0.0, patch_size: int = 4, dim: int = 512,
                       depth: int = 4, heads: int = 6, dim_head: int = 64, mlp_dim: int = 256) -> nn.Module:
    """kentaroy47's `--net vit_tiny`: k47_vit_small's network with depth 4, heads 6 (x 64 = 384 wide
    attention in a 512 wide model), mlp_dim 256: 4.37M parameters at 10 classes."""
    return build_k47_vit_small(num_classes, image_size, in_chans, dropout=dropout, emb_dropout=emb_dropout,
                               drop_path=drop_path, patch_size=patch_size, dim=dim, depth=depth, heads=heads,
                               dim_head=dim_head, mlp_dim=mlp_dim)


@register_model("k47_simplevit", about="kentaroy47 `--net simplevit`: lucidrains SimpleViT, dim 512, depth 6, "
                                       "8 heads x 64, MLP 512", sizes=PATCHES)
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
                sizes=PATCHES)
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
                                        "6 + 2 class-attention layers, 6 heads x 64, MLP 256", sizes=PATCHES)
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
                                       "convmixer (256/8, kernel 5, patch 2)", sizes=PATCHES)
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
