"""Tests of models/k47.py: the k47_* models against independent references of
kentaroy47/vision-transformers-cifar10's (lucidrains') networks with the same weights, their
parameter counts (by formula and equal to the references'), their kentaroy47 defaults, SPT's
one-pixel shifts and the shared log-temperature LSA. CPU only."""
import os
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import vit  # noqa: E402
from models import k47, layers, vit_variants  # noqa: E402
from zoo_helpers import EXPECTED_PARAMS, build, n_params, randomise  # noqa: E402


# --------------------------------------------------------------------------- k47_*: kentaroy47's networks
#
# Independent references of the lucidrains/vit-pytorch networks that kentaroy47/vision-transformers-cifar10
# copies into its models/ (vit.py, vit_small.py, simplevit.py, cait.py), written here from their
# semantics: patches flattened as (p1 p2 c), separate PreNorm LayerNorms, to_qkv chunked in 3 and split
# as (h d), dim_head independent of dim. Our k47 models must compute the same logits with the same weights.


def ref_patches(x, p):
    """'b c (h p1) (w p2) -> b (h w) (p1 p2 c)', through unfold (our models reshape)."""
    b, c = x.shape[:2]
    return x.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 4, 5, 1).reshape(b, -1, p * p * c)


class RefAttention(nn.Module):
    """to_qkv (no bias) -> softmax(q k^T * scale) v -> to_out; lsa: scale = exp(learned log t), diagonal masked."""

    def __init__(self, dim, heads, dim_head, lsa=False, out_bias=True, norm_inside=False):
        super().__init__()
        self.heads, self.lsa = heads, lsa
        self.norm = nn.LayerNorm(dim) if norm_inside else nn.Identity()  # SimpleViT normalises inside
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim, bias=out_bias)
        self.scale = dim_head ** -0.5
        if lsa:
            self.temperature = nn.Parameter(torch.log(torch.tensor(dim_head ** -0.5)))

    def forward(self, x):
        x = self.norm(x)
        b, n, _ = x.shape
        q, k, v = (t.reshape(b, n, self.heads, -1).transpose(1, 2) for t in self.to_qkv(x).chunk(3, dim=-1))
        dots = q @ k.transpose(-1, -2) * (self.temperature.exp() if self.lsa else self.scale)
        if self.lsa:
            dots = dots.masked_fill(torch.eye(n, dtype=torch.bool), -torch.finfo(dots.dtype).max)
        out = dots.softmax(dim=-1) @ v
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class RefViT(nn.Module):
    """lucidrains' ViT ("vit"), vit_for_small_dataset ("small") or SimpleViT ("simple")."""

    def __init__(self, kind, image_size, patch_size, num_classes, dim, depth, heads, mlp_dim, dim_head=64):
        super().__init__()
        self.kind, self.p = kind, patch_size
        n = (image_size // patch_size) ** 2
        patch_dim = 3 * patch_size ** 2 * (5 if kind == "small" else 1)
        self.patch_norm = nn.LayerNorm(patch_dim) if kind == "small" else nn.Identity()
        self.patch_linear = nn.Linear(patch_dim, dim)
        if kind != "simple":
            self.pos_embedding = nn.Parameter(torch.randn(1, n + 1, dim))
            self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        simple = kind == "simple"
        self.layers = nn.ModuleList([nn.ModuleList([
            nn.Identity() if simple else nn.LayerNorm(dim),
            RefAttention(dim, heads, dim_head, lsa=kind == "small", out_bias=not simple, norm_inside=simple),
            nn.LayerNorm(dim),
            nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))]) for _ in range(depth)])
        self.mlp_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))

    @staticmethod
    def sincos(h, w, dim, temperature=10000):
        y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        omega = 1.0 / temperature ** (torch.arange(dim // 4) / (dim // 4 - 1))
        y, x = y.flatten()[:, None] * omega[None, :], x.flatten()[:, None] * omega[None, :]
        return torch.cat((x.sin(), x.cos(), y.sin(), y.cos()), dim=1)

    def forward(self, img):
        if self.kind == "small":
            shifts = ((1, -1, 0, 0), (-1, 1, 0, 0), (0, 0, 1, -1), (0, 0, -1, 1))
            img = torch.cat([img, *(F.pad(img, s) for s in shifts)], dim=1)
        x = self.patch_linear(self.patch_norm(ref_patches(img, self.p)))
        if self.kind == "simple":
            g = img.shape[-1] // self.p
            x = x + self.sincos(g, g, x.shape[-1])
        else:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embedding
        for norm_a, attn, norm_f, ff in self.layers:
            x = attn(norm_a(x)) + x
            x = ff(norm_f(x)) + x
        return self.mlp_head(x.mean(dim=1) if self.kind == "simple" else x[:, 0])


class RefCaiTAttention(nn.Module):
    def __init__(self, dim, heads, dim_head):
        super().__init__()
        self.heads, self.scale = heads, dim_head ** -0.5
        self.to_q = nn.Linear(dim, heads * dim_head, bias=False)
        self.to_kv = nn.Linear(dim, 2 * heads * dim_head, bias=False)
        self.mix_heads_pre_attn = nn.Parameter(torch.randn(heads, heads))
        self.mix_heads_post_attn = nn.Parameter(torch.randn(heads, heads))
        self.to_out = nn.Linear(heads * dim_head, dim)

    def forward(self, x, context=None):
        context = x if context is None else torch.cat((x, context), dim=1)
        b, h = x.shape[0], self.heads
        q, k, v = (t.reshape(b, t.shape[1], h, -1).transpose(1, 2)
                   for t in (self.to_q(x), *self.to_kv(context).chunk(2, dim=-1)))
        dots = torch.einsum("bhid,bhjd->bhij", q, k) * self.scale
        dots = torch.einsum("bhij,hg->bgij", dots, self.mix_heads_pre_attn)
        attn = torch.einsum("bhij,hg->bgij", dots.softmax(dim=-1), self.mix_heads_post_attn)
        out = torch.einsum("bhij,bhjd->bhid", attn, v)
        return self.to_out(out.transpose(1, 2).reshape(b, x.shape[1], -1))


class RefCaiT(nn.Module):
    def __init__(self, image_size, patch_size, num_classes, dim, depth, cls_depth, heads, mlp_dim, dim_head=64):
        super().__init__()
        self.p = patch_size
        self.patch_linear = nn.Linear(3 * patch_size ** 2, dim)
        self.pos_embedding = nn.Parameter(torch.randn(1, (image_size // patch_size) ** 2, dim))
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))

        def stack(n):  # [LayerScale-attn, LayerScale-ff] per layer: (norm, fn, scale (1, 1, dim)) each
            return nn.ModuleList([nn.ModuleDict(dict(
                norm_a=nn.LayerNorm(dim), attn=RefCaiTAttention(dim, heads, dim_head), norm_f=nn.LayerNorm(dim),
                ff=nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim)),
                scales=nn.ParameterList([nn.Parameter(torch.full((1, 1, dim), 0.1)) for _ in range(2)])))
                for _ in range(n)])

        self.patch_transformer, self.cls_transformer = stack(depth), stack(cls_depth)
        self.mlp_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))

    @staticmethod
    def run(layers, x, context=None):
        for lyr in layers:
            x = lyr["attn"](lyr["norm_a"](x), context=context) * lyr["scales"][0] + x  # context not normalised
            x = lyr["ff"](lyr["norm_f"](x)) * lyr["scales"][1] + x
        return x

    def forward(self, img):
        x = self.patch_linear(ref_patches(img, self.p)) + self.pos_embedding
        x = self.run(self.patch_transformer, x)
        return self.mlp_head(self.run(self.cls_transformer, self.cls_token.expand(x.shape[0], -1, -1), x)[:, 0])


def port_patch_linear(linear, conv, p):
    """A Linear on (p1 p2 c)-flattened patches as the equivalent stride-p conv."""
    with torch.no_grad():
        conv.weight.copy_(linear.weight.view(linear.out_features, p, p, -1).permute(0, 3, 1, 2))
        conv.bias.copy_(linear.bias)


def port_vit(ref: RefViT, ours: vit_variants.ViT):
    with torch.no_grad():
        if ref.kind == "small":
            ours.patch_embed.norm.load_state_dict(ref.patch_norm.state_dict())
            ours.patch_embed.proj.load_state_dict(ref.patch_linear.state_dict())
        else:
            port_patch_linear(ref.patch_linear, ours.patch_embed.proj, ref.p)
        if ref.kind != "simple":
            ours.cls_token.copy_(ref.cls_token)
            ours.pos_embed.copy_(ref.pos_embedding)
        for blk, (norm_a, attn, norm_f, ff) in zip(ours.blocks, ref.layers, strict=True):
            blk.norm1.load_state_dict((attn.norm if ref.kind == "simple" else norm_a).state_dict())
            blk.attn.qkv.load_state_dict(attn.to_qkv.state_dict())
            blk.attn.proj.load_state_dict(attn.to_out.state_dict())
            if ref.kind == "small":
                blk.attn.temperature.copy_(attn.temperature)
            blk.norm2.load_state_dict(norm_f.state_dict())
            blk.mlp[0].load_state_dict(ff[0].state_dict())
            blk.mlp[3].load_state_dict(ff[2].state_dict())
        ours.norm.load_state_dict(ref.mlp_head[0].state_dict())
        ours.head.load_state_dict(ref.mlp_head[1].state_dict())


def port_cait(ref: RefCaiT, ours: k47.K47CaiT):
    with torch.no_grad():
        port_patch_linear(ref.patch_linear, ours.patch_embed.proj, ref.p)
        ours.pos_embed.copy_(ref.pos_embedding)
        ours.cls_token.copy_(ref.cls_token)
        for mine, theirs in ((ours.blocks, ref.patch_transformer), (ours.cls_blocks, ref.cls_transformer)):
            for blk, lyr in zip(mine, theirs, strict=True):
                blk.norm1.load_state_dict(lyr["norm_a"].state_dict())
                blk.attn.q.load_state_dict(lyr["attn"].to_q.state_dict())
                blk.attn.kv.load_state_dict(lyr["attn"].to_kv.state_dict())
                blk.attn.mix_pre.copy_(lyr["attn"].mix_heads_pre_attn)
                blk.attn.mix_post.copy_(lyr["attn"].mix_heads_post_attn)
                blk.attn.proj.load_state_dict(lyr["attn"].to_out.state_dict())
                blk.ls1.gamma.copy_(lyr["scales"][0].view(-1))
                blk.norm2.load_state_dict(lyr["norm_f"].state_dict())
                blk.mlp[0].load_state_dict(lyr["ff"][0].state_dict())
                blk.mlp[3].load_state_dict(lyr["ff"][2].state_dict())
                blk.ls2.gamma.copy_(lyr["scales"][1].view(-1))
        ours.head.load_state_dict(ref.mlp_head.state_dict())


# name -> (reference, its kentaroy47 arguments at --patch 4 --dimhead 512)
K47 = {
    "k47_vit": (RefViT, dict(kind="vit", dim=512, depth=6, heads=8, mlp_dim=512)),
    "k47_vit_small": (RefViT, dict(kind="small", dim=512, depth=6, heads=8, mlp_dim=512)),
    "k47_vit_tiny": (RefViT, dict(kind="small", dim=512, depth=4, heads=6, mlp_dim=256)),
    "k47_simplevit": (RefViT, dict(kind="simple", dim=512, depth=6, heads=8, mlp_dim=512)),
    "k47_cait": (RefCaiT, dict(dim=512, depth=6, cls_depth=2, heads=8, mlp_dim=512)),
    "k47_cait_small": (RefCaiT, dict(dim=512, depth=6, cls_depth=2, heads=6, mlp_dim=256)),
}


@pytest.mark.parametrize("name", list(K47))
def test_k47_parameter_counts_equal_the_references(name):
    ref_cls, kw = K47[name]
    ref = ref_cls(image_size=32, patch_size=4, num_classes=10, **kw)
    assert n_params(build(name, 10)) == n_params(ref) == EXPECTED_PARAMS[name]


def test_k47_param_counts_by_formula():
    d = 512
    lin = lambda i, o, bias=True: i * o + o * bias  # noqa: E731
    ln, head = 2 * d, 2 * d + lin(d, 10)
    ff = lambda m: lin(d, m) + lin(m, d)  # noqa: E731
    def vit_layer(h, m, out_bias=True):
        return 2 * ln + lin(d, 3 * 64 * h, False) + lin(64 * h, d, out_bias) + ff(m)

    assert EXPECTED_PARAMS["k47_vit"] == lin(48, d) + 65 * d + d + 6 * vit_layer(8, 512) + head
    spt = 2 * 240 + lin(240, d)  # LayerNorm + Linear over 5 x 3 x 4 x 4 values
    assert EXPECTED_PARAMS["k47_vit_small"] == spt + 65 * d + d + 6 * (vit_layer(8, 512) + 1) + head
    assert EXPECTED_PARAMS["k47_vit_tiny"] == spt + 65 * d + d + 4 * (vit_layer(6, 256) + 1) + head
    assert EXPECTED_PARAMS["k47_simplevit"] == lin(48, d) + 6 * vit_layer(8, 512, out_bias=False) + head
    def cait_layer(h, m):  # + the talking-heads matrices and the two LayerScales
        return 2 * ln + lin(d, 64 * h, False) + lin(d, 128 * h, False) + 2 * h * h + lin(64 * h, d) + ff(m) + 2 * d

    assert EXPECTED_PARAMS["k47_cait"] == lin(48, d) + 64 * d + d + 8 * cait_layer(8, 512) + head
    assert EXPECTED_PARAMS["k47_cait_small"] == lin(48, d) + 64 * d + d + 8 * cait_layer(6, 256) + head


@pytest.mark.parametrize("name", list(K47))
def test_k47_models_compute_the_references(name):
    """At a small size (16x16, width 64, two layers, four heads of 16), eval mode, float64."""
    ref_cls, kw = K47[name]
    small = dict(kw, dim=64, depth=2, heads=4, mlp_dim=96) | ({"cls_depth": 2} if "cls_depth" in kw else {})
    ref = ref_cls(image_size=16, patch_size=4, num_classes=10, dim_head=16, **small).double().eval()
    ours_kw = {k: v for k, v in small.items() if k != "kind"}
    ours = build(name, 10, 16, 3, dim_head=16, **ours_kw).double().eval()
    randomise(ref)
    (port_cait if ref_cls is RefCaiT else port_vit)(ref, ours)
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        want, got = ref(x), ours(x)
    assert want.abs().max() > 0.1  # not a trivial output
    assert (got - want).abs().max().item() < 1e-9


def test_k47_defaults_as_kentaroy47():
    vit_small = build("k47_vit_small", 10)
    blk = vit_small.blocks[0]
    assert blk.attn.lsa and blk.attn.temperature.shape == () and blk.attn.qkv.bias is None
    assert blk.attn.scale().item() == pytest.approx(64 ** -0.5)  # exp of the learned log, init log(1/8)
    assert vit_small.patch_embed.shifts == k47.K47_SPT_SHIFTS
    # dropout 0.1 in attention output and MLP, emb dropout 0.1, none before the head, no stochastic depth
    drops = {m.p for m in vit_small.blocks.modules() if isinstance(m, nn.Dropout)}
    assert drops == {0.1} and vit_small.pos_drop.p == 0.1 and vit_small.head_drop.p == 0.0
    assert all(m.p == 0.0 for m in vit_small.modules() if isinstance(m, vit.DropPath))
    # cls and positions ~ N(0, 1) (lucidrains' randn), not timm's 0.02
    assert 0.8 < vit_small.pos_embed.std().item() < 1.2
    cait = build("k47_cait", 10)
    assert len(cait.blocks) == 6 and len(cait.cls_blocks) == 2 and cait.blocks[0].attn.heads == 8
    assert all((b.ls1.gamma == 0.1).all() for b in [*cait.blocks, *cait.cls_blocks])
    assert {m.p for m in cait.modules() if isinstance(m, vit.DropPath)} == {0.05}  # layer_dropout 0.05
    assert build("k47_cait_small", 10).blocks[0].attn.heads == 6
    simple = build("k47_simplevit", 10)
    assert simple.cls_token is None and simple.norm_after_pool and simple.blocks[0].attn.proj.bias is None
    assert not any(m.p for m in simple.modules() if isinstance(m, nn.Dropout))


def test_k47_shifts_are_one_pixel_right_left_down_up():
    x = torch.zeros(1, 1, 6, 6)
    x[0, 0, 2, 3] = 1.0
    shifted = vit_variants.ShiftedPatchTokenization.with_shifts(x, k47.K47_SPT_SHIFTS)
    where = [tuple(c.nonzero()[0].tolist()) for c in shifted[0, 1:]]
    assert where == [(2, 4), (2, 2), (3, 3), (1, 3)]


def test_shared_log_temperature_lsa_matches_written_out():
    torch.manual_seed(0)
    attn = layers.Attention(48, heads=3, dim_head=16, qkv_bias=False, lsa=True, temperature="shared_log")
    attn = attn.double().eval()
    attn.temperature.data = torch.tensor(0.7, dtype=torch.float64)
    x = torch.randn(2, 9, 48, dtype=torch.float64)
    q, k, v = (x @ attn.qkv.weight.T).view(2, 9, 3, 3, 16).permute(2, 0, 3, 1, 4)
    scores = (q @ k.transpose(-2, -1)) * torch.tensor(0.7, dtype=torch.float64).exp()
    scores = scores.masked_fill(torch.eye(9, dtype=torch.bool), float("-inf"))
    want = attn.proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 9, 48))
    assert ((attn(x) - want).norm() / want.norm()).item() < 1e-9


def test_k47_convmixer_computes_the_reference():
    """kentaroy47's ConvMixer(256, 16, kernel_size=8, patch_size=1): 'same' padding with an even kernel."""
    class Residual(nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, x):
            return self.fn(x) + x

    def ref_convmixer(dim, depth, kernel_size, patch_size, n_classes):
        return nn.Sequential(
            nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size), nn.GELU(), nn.BatchNorm2d(dim),
            *[nn.Sequential(Residual(nn.Sequential(nn.Conv2d(dim, dim, kernel_size, groups=dim, padding="same"),
                                                   nn.GELU(), nn.BatchNorm2d(dim))),
                            nn.Conv2d(dim, dim, kernel_size=1), nn.GELU(), nn.BatchNorm2d(dim)) for _ in range(depth)],
            nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(dim, n_classes))

    assert n_params(ref_convmixer(256, 16, 8, 1, 10)) == EXPECTED_PARAMS["k47_convmixer"]
    ref = ref_convmixer(32, 2, 8, 1, 10).double()
    randomise(ref)
    for m in ref.modules():  # batch-norm statistics that are not the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    ours = build("k47_convmixer", 10, 16, 3, dim=32, depth=2).double()
    state = ref.state_dict()
    last = len(ref) - 1  # ours has a Dropout before the Linear: one index further
    state = {(k.replace(f"{last}.", f"{last + 1}.", 1) if k.startswith(f"{last}.") else k): v for k, v in state.items()}
    ours.load_state_dict(state)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        want, got = ref.eval()(x), ours.eval()(x)
    assert (got - want).abs().max().item() < 1e-9
