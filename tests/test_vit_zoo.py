"""Tests of the transformer zoo (models/ vit_variants, cait, swin, mixer, mobilevit, cct, k47): every
model builds, trains a step, has its expected size; the attention maths
(SDPA against the written-out softmax, LSA's mask, Swin's shifted windows, talking heads), the
sin-cos embedding, DyT, SPT's shifts; the k47_* models against independent references of
kentaroy47/vision-transformers-cifar10's (lucidrains') networks with the same weights; and a small
model memorises a batch. CPU only."""
import os
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import models  # noqa: E402
import vit  # noqa: E402
from models import cait, cct, k47, layers, mixer, mobilevit, swin, vit_variants  # noqa: E402

# Parameter counts with num_classes=10, image_size=32, in_chans=3 (read off this implementation;
# the published ones are checked in test_published_param_counts).
EXPECTED_PARAMS = {
    "simple_vit": 12_444_682,
    "vit_spt_lsa": 2_729_878,
    "vit_dyt": 6_268_825,
    "cait": 11_600_650,
    "swin_t": 27_505_108,
    "mlp_mixer": 17_110_026,
    "convmixer": 594_186,
    "mobilevit_xxs": 954_234,
    "cct_7_3x1": 3_760_139,
    "vit_lite_7_4": 3_716_874,  # by formula in test_vit_lite_and_cvt_param_counts_by_formula
    "cvt_7_4": 3_716_619,
    # kentaroy47/vision-transformers-cifar10 (--patch 4 --dimhead 512): by formula in
    # test_k47_param_counts_by_formula, and equal to the references' counts below
    "k47_vit": 9_523_722,
    "k47_vit_small": 9_622_512,
    "k47_vit_tiny": 4_371_438,
    "k47_simplevit": 9_486_858,
    "k47_cait": 12_685_322,
    "k47_cait_small": 8_488_522,
    "k47_convmixer": 1_339_402,
}
ZOO_MODULES = {m.__name__ for m in (vit_variants, cait, swin, mixer, mobilevit, cct, k47)}
ZOO = [n for n in models.model_names() if models.MODELS.get(n).builder.__module__ in ZOO_MODULES]


def build(name, *args, **options):
    return models.MODELS.get(name)(*args, **options)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def forward_recording_first_layer(model, x):
    """model(x), and the first Conv2d / Linear that the pass ran (found with hooks, not by name)."""
    order = []
    hooks = [m.register_forward_hook(lambda mod, i, o: order.append(mod))
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        out = model(x)
    finally:
        for h in hooks:
            h.remove()
    return out, order[0]


def test_registry_is_complete():
    assert set(ZOO) == set(EXPECTED_PARAMS)
    for name in ZOO:
        spec = models.MODELS.get(name)
        assert spec.builder.__name__ == f"build_{name}" and not spec.args and not spec.kwargs
        assert spec.about


@pytest.mark.parametrize("name", ZOO)
def test_builds_trains_and_counts(name):
    torch.manual_seed(0)
    # depth=None is "not set" (the model's default) for the models that have a depth
    depth = dict(depth=None) if "depth" in models.accepted_options(name) else {}
    model = models.build_model(name, 10, 32, 3, dropout=0.1, drop_path=0.1, **depth)
    assert n_params(model) == EXPECTED_PARAMS[name]
    with pytest.raises(TypeError):  # the builders take no option they do not use
        build(name, 10, some_unknown_option=1)

    out, stem = forward_recording_first_layer(model.train(), torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()
    F.cross_entropy(out, torch.tensor([1, 7])).backward()
    assert stem.weight.grad is not None and stem.weight.grad.abs().sum() > 0
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unused, f"parameters outside the graph: {unused}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_published_param_counts():
    # CCT-7/3x1, CIFAR-10: 3.76M (Hassani et al. 2021, table 1).
    assert abs(EXPECTED_PARAMS["cct_7_3x1"] / 3.76e6 - 1) < 0.01
    # ViT-Lite-7/4 and CVT-7/4, CIFAR-10: 3.717M each (Compact-Transformers README table), to the digit.
    assert round(EXPECTED_PARAMS["vit_lite_7_4"] / 1e6, 3) == round(EXPECTED_PARAMS["cvt_7_4"] / 1e6, 3) == 3.717
    # ConvMixer-256/8 (kernel 5, patch 2): 0.6M (Trockman & Kolter 2022, CIFAR-10 table).
    assert abs(EXPECTED_PARAMS["convmixer"] / 0.6e6 - 1) < 0.02
    # MobileViT-XXS, ImageNet head: 1.27M (ml-cvnets / timm; the paper rounds to 1.3M). The network
    # has no position embedding, so the count does not depend on the image size.
    assert abs(n_params(mobilevit.build_mobilevit_xxs(1000)) / 1.27e6 - 1) < 0.01
    # Swin-T, ImageNet head: 28.29M (torchvision swin_t). Patch 2 / window 4 change it by only the
    # patch-embedding conv and the smaller relative-position tables.
    assert abs(n_params(swin.build_swin_t(1000)) / 28.29e6 - 1) < 0.005


# Small sizes keep these fast; what is checked is that the stem takes in_chans and that every
# shape derived from the image size (position embeddings, token MLPs, windows) follows it.
SMALL = {
    "simple_vit": dict(depth=1),
    "vit_spt_lsa": dict(depth=1),
    "cait": dict(depth=1, cls_depth=1),
    "swin_t": dict(depths=(2, 2, 2, 2)),
    "mlp_mixer": dict(depth=1),
    "convmixer": dict(depth=1),
    "mobilevit_xxs": dict(depths=(1, 1, 1)),
    "cct_7_3x1": dict(depth=1),
    "vit_lite_7_4": dict(depth=1),
    "cvt_7_4": dict(depth=1),
    "k47_vit": dict(depth=1),
    "k47_vit_small": dict(depth=1),
    "k47_simplevit": dict(depth=1),
    "k47_cait": dict(depth=1, cls_depth=1),
    "k47_convmixer": dict(depth=1),
}


@pytest.mark.parametrize("name,in_chans,image_size", [
    ("convmixer", 1, 32), ("simple_vit", 3, 64), ("vit_spt_lsa", 1, 64), ("cait", 1, 32),
    ("swin_t", 3, 64), ("mlp_mixer", 1, 64), ("mobilevit_xxs", 1, 64), ("cct_7_3x1", 1, 64),
    ("vit_lite_7_4", 1, 64), ("cvt_7_4", 3, 48),
    ("k47_vit", 1, 64), ("k47_vit_small", 1, 48), ("k47_simplevit", 3, 64), ("k47_cait", 1, 48)])
def test_other_channels_and_sizes(name, in_chans, image_size):
    torch.manual_seed(0)
    model = build(name, 10, image_size, in_chans, **SMALL[name]).eval()
    x = torch.randn(2, in_chans, image_size, image_size)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_size_overrides_and_bad_image_size():
    small = vit_variants.build_simple_vit(10, depth=2, dim=64, heads=2, mlp_dim=128)
    assert len(small.blocks) == 2 and small.head.in_features == 64
    with pytest.raises(ValueError):
        vit_variants.build_simple_vit(10, image_size=30)


# --------------------------------------------------------------------------- attention maths


def reference_attention(attn: layers.Attention, x):
    """softmax(Q K^T * scale + mask) V, written out, with the module's weights."""
    B, N, _ = x.shape
    h, d = attn.heads, attn.dim_head
    q, k, v = (x @ attn.qkv.weight.T).view(B, N, 3, h, d).permute(2, 0, 3, 1, 4)
    if attn.qkv.bias is not None:
        raise AssertionError("the reference below assumes qkv without bias")
    if attn.lsa:
        scores = (q @ k.transpose(-2, -1)) * attn.temperature.view(1, h, 1, 1)
        scores = scores.masked_fill(torch.eye(N, dtype=torch.bool), float("-inf"))
    else:
        scores = (q @ k.transpose(-2, -1)) * d ** -0.5
    out = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, N, h * d)
    return attn.proj(out)


@pytest.mark.parametrize("lsa", [False, True])
def test_sdpa_matches_written_out_attention(lsa):
    torch.manual_seed(0)
    attn = layers.Attention(48, heads=3, dim_head=16, qkv_bias=False, lsa=lsa).double().eval()
    if lsa:  # a learned temperature, not the initial 1/sqrt(d)
        attn.temperature.data = torch.tensor([0.1, 0.5, 2.0], dtype=torch.float64)
    x = torch.randn(2, 17, 48, dtype=torch.float64)
    got, want = attn(x), reference_attention(attn, x)
    assert ((got - want).norm() / want.norm()).item() < 1e-6


def test_lsa_mask_removes_self_attention():
    torch.manual_seed(0)
    attn = layers.Attention(32, heads=2, dim_head=16, lsa=True)
    N = 6
    q, k = torch.randn(2, 1, 2, N, 16).unbind(0)
    q = q * 10  # large logits: without the mask, q_i . k_i would not be near zero weight
    k = q.clone()  # each token's key equals its query: self-similarity would dominate
    v = torch.eye(N).expand(1, 2, N, N)  # with V = I the output is the attention matrix itself
    weights = attn.attend(q, k, v)
    assert torch.diagonal(weights, dim1=-2, dim2=-1).abs().max().item() == 0.0
    torch.testing.assert_close(weights.sum(-1), torch.ones(1, 2, N))
    # the temperature is learned: it gets a gradient
    attn(torch.randn(1, N, 32)).sum().backward()
    assert attn.temperature.grad is not None and attn.temperature.grad.abs().sum() > 0


def test_class_attention_matches_written_out():
    torch.manual_seed(0)
    ca = cait.ClassAttention(32, heads=4).double().eval()
    x = torch.randn(2, 9, 32, dtype=torch.float64)
    q = F.linear(x[:, :1], ca.q.weight, ca.q.bias).view(2, 1, 4, 8).transpose(1, 2)
    k, v = F.linear(x, ca.kv.weight, ca.kv.bias).view(2, 9, 2, 4, 8).permute(2, 0, 3, 1, 4)
    want = ca.proj(((q @ k.transpose(-2, -1)) * 8 ** -0.5).softmax(-1).matmul(v).transpose(1, 2).reshape(2, 1, 32))
    got = ca(x)
    assert ((got - want).norm() / want.norm()).item() < 1e-6


@pytest.mark.parametrize("shift", [0, 2])
def test_swin_sdpa_window_attention_matches_torchvision(shift):
    """Our SDPA window attention against torchvision's written-out shifted_window_attention."""
    from torchvision.models.swin_transformer import shifted_window_attention

    torch.manual_seed(0)
    attn = swin.WindowAttentionSDPA(24, [4, 4], [shift, shift], num_heads=3).double().eval()
    nn.init.normal_(attn.relative_position_bias_table, std=1.0)  # make the bias matter
    x = torch.randn(2, 8, 8, 24, dtype=torch.float64)
    want = shifted_window_attention(
        x, attn.qkv.weight, attn.proj.weight, attn.get_relative_position_bias(), attn.window_size, attn.num_heads,
        shift_size=attn.shift_size, qkv_bias=attn.qkv.bias, proj_bias=attn.proj.bias, training=False)
    got = attn(x)
    assert ((got - want).norm() / want.norm()).item() < 1e-6


def test_swin_windows_follow_the_feature_map():
    model = swin.build_swin_t(10, depths=(2, 2, 2, 2))
    blocks = [m for m in model.modules() if isinstance(m, swin.WindowAttentionSDPA)]
    assert len(blocks) == 8
    # stages 1-2 (16x16, 8x8): 4x4 windows, every second block shifted by 2; stage 4 (2x2): one 2x2 window
    # (the blocks keep the configured shift for stage 3's 4x4 map; the forward drops it there)
    assert [b.shift_size for b in blocks[:2]] == [[0, 0], [2, 2]]
    assert blocks[-1].window_size == [2, 2] and blocks[-1].shift_size == [0, 0]
    assert blocks[-1].relative_position_bias_table.shape == (9, 24)


def test_autocast_bf16_forward():
    """The masks and the learned temperature must follow q's dtype under autocast."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    for model in (vit_variants.build_vit_spt_lsa(10, depth=1), swin.build_swin_t(10, depths=(2, 2, 2, 2))):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = model.eval()(x)
        assert out.shape == (2, 10) and torch.isfinite(out.float()).all()


# --------------------------------------------------------------------------- building blocks


def test_sincos_embedding_known_values():
    pe = layers.posemb_sincos_2d(4, 4, 16)  # channels: [sin x | cos x | sin y | cos y], 4 each
    assert pe.shape == (16, 16)
    sin_parts = torch.cat([pe[0, 0:4], pe[0, 8:12]])
    cos_parts = torch.cat([pe[0, 4:8], pe[0, 12:16]])
    assert torch.equal(sin_parts, torch.zeros(8)) and torch.equal(cos_parts, torch.ones(8))
    # position (y=0, x=1) is token 1; (y=1, x=0) is token 4. The first frequency is 1, the last 1/10000.
    one = torch.tensor(1.0)
    want = torch.stack([one.sin(), torch.tensor(1e-4).sin(), one.cos(), torch.tensor(0.0), one])
    torch.testing.assert_close(pe[1, [0, 3, 4, 8, 12]], want)
    torch.testing.assert_close(pe[4, 8], torch.tensor(1.0).sin())
    # SimpleViT uses it as a fixed buffer, not a parameter and not in the state dict
    model = vit_variants.build_simple_vit(10, depth=1)
    torch.testing.assert_close(model.pos_embed[0], layers.posemb_sincos_2d(8, 8, 384))
    assert "pos_embed" not in dict(model.named_parameters()) and "pos_embed" not in model.state_dict()


def test_shifted_patch_tokenization():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 4, 4] = 1.0
    shifted = vit_variants.ShiftedPatchTokenization.with_shifts(x, 2)
    assert shifted.shape == (1, 5, 8, 8) and torch.equal(shifted[:, 0], x[:, 0])
    # the pixel moves by half a patch along each diagonal
    moved = {tuple(c.nonzero()[0].tolist()) for c in shifted[0, 1:]}
    assert moved == {(6, 6), (6, 2), (2, 6), (2, 2)}
    spt = vit_variants.ShiftedPatchTokenization(3, 32, 4)
    assert spt(torch.randn(2, 3, 32, 32)).shape == (2, 64, 32) and spt.proj.in_features == 5 * 3 * 16


def test_patchify_order():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)  # channels 0..15 and 16..31
    p = vit_variants.patchify(x, 2)
    assert p.shape == (1, 4, 8)
    assert p[0, 0].tolist() == [0, 16, 1, 17, 4, 20, 5, 21]  # top-left patch as (row, col, channel)
    assert p[0, 1].tolist()[:2] == [2, 18]


def test_dynamic_tanh():
    dyt = vit_variants.DynamicTanh(4)
    assert dyt.alpha.shape == () and dyt.alpha.item() == 0.5
    dyt.weight.data = torch.tensor([1.0, 2.0, 3.0, 4.0])
    dyt.bias.data = torch.tensor([0.0, 1.0, 0.0, -1.0])
    x = torch.randn(3, 4)
    torch.testing.assert_close(dyt(x), dyt.weight * torch.tanh(0.5 * x) + dyt.bias)
    model = vit_variants.build_vit_dyt(10, depth=2)
    assert not any(isinstance(m, nn.LayerNorm) for m in model.modules())
    assert sum(isinstance(m, vit_variants.DynamicTanh) for m in model.modules()) == 2 * 2 + 1


def test_one_drop_path_and_patchify():
    """The zoo uses vit.py's DropPath and patchify (tested in test_vit.py), not copies of them."""
    assert layers.DropPath is vit.DropPath and vit_variants.patchify is vit.patchify
    for name in ("simple_vit", "mlp_mixer", "cct_7_3x1", "vit_lite_7_4", "k47_cait"):
        model = build(name, 10, drop_path=0.1, **SMALL.get(name, {}))
        assert any(isinstance(m, vit.DropPath) for m in model.modules())


def test_cct_sequence_pooling_and_tokens():
    model = cct.build_cct_7_3x1(10)
    assert model.pos_embed.shape == (1, 16 * 16, 256)  # conv stride 1 + maxpool 3/2: 32 -> 16
    assert not hasattr(model, "cls_token")
    assert model.pool.attention_pool.out_features == 1


def test_vit_lite_and_cvt_class_token_vs_sequence_pooling():
    """The two differ only in the pooling: ViT-Lite a class token (with its own position), CVT SeqPool."""
    lite, cvt = cct.build_vit_lite_7_4(10), cct.build_cvt_7_4(10)
    for model in (lite, cvt):
        conv = model.tokenizer.proj  # a 4x4 patch conv, stride 4, with bias: 64 tokens at 32x32
        assert isinstance(model.tokenizer, layers.PatchEmbed)
        assert conv.kernel_size == conv.stride == (4, 4) and conv.padding == (0, 0) and conv.bias is not None
        # CCT's encoder layers (its code's TransformerEncoderLayer), not the pre-norm Block
        assert len(model.blocks) == 7 and all(isinstance(b, cct.CCTBlock) for b in model.blocks)
        blk = model.blocks[0]
        assert blk.attn.heads == 4 and blk.attn.qkv.bias is None and blk.mlp[0].out_features == 512
        # the zoo's default 0 (the paper's models default to 0.1 for both)
        assert blk.attn.attn_dropout == 0.0 and all(m.p == 0.0 for m in model.modules() if isinstance(m, vit.DropPath))
    assert lite.cls_token.shape == (1, 1, 256) and (lite.cls_token == 0).all() and lite.pool is None
    assert lite.pos_embed.shape == (1, 1 + 64, 256)
    assert not hasattr(cvt, "cls_token") and isinstance(cvt.pool, cct.SeqPool)
    assert cvt.pos_embed.shape == (1, 64, 256)
    # class token + its position (2 x 256) against SeqPool's Linear(256, 1)
    assert n_params(lite) - n_params(cvt) == 2 * 256 - 257
    # ViT-Lite's output is the class token's: changing another token's final state after the norm does
    # nothing; CVT's SeqPool weighs every token
    def bump_token_5(module, inputs, out):
        out = out.clone()
        out[:, 5] += 1.0
        return out

    x = torch.randn(2, 3, 32, 32)
    for model, moves in ((lite, False), (cvt, True)):
        model.eval()
        with torch.no_grad():
            plain = model(x)
            hook = model.norm.register_forward_hook(bump_token_5)
            bumped = model(x)
            hook.remove()
        assert (not torch.allclose(plain, bumped)) == moves


def test_vit_lite_and_cvt_options_arrive():
    lite = build("vit_lite_7_4", 10, 64, 3, patch_size=8, dim=64, depth=3, heads=2, mlp_ratio=1.5,
                 attn_dropout=0.1, drop_path=0.1, dropout=0.2)
    assert lite.tokenizer.proj.kernel_size == (8, 8) and lite.pos_embed.shape == (1, 1 + 64, 64)
    assert len(lite.blocks) == 3 and lite.blocks[0].attn.heads == 2 and lite.blocks[0].mlp[0].out_features == 96
    assert {b.attn.attn_dropout for b in lite.blocks} == {0.1}
    # the code's stochastic depth: torch.linspace(0, rate, depth)
    assert [b.drop_path.p for b in lite.blocks] == pytest.approx([0.0, 0.05, 0.1])
    assert lite.pos_drop.p == 0.2 and lite.head_drop.p == 0.2
    with pytest.raises(ValueError, match="multiple of 4"):  # whole patches, as the code asserts
        cct.build_cvt_7_4(10, image_size=30)


def test_vit_lite_and_cvt_param_counts_by_formula():
    d, n = 256, 64  # width, patches at 32x32 / 4x4
    lin = lambda i, o, bias=True: i * o + o * bias  # noqa: E731
    ln = 2 * d
    # pre-attention norm, qkv (no bias), out projection, post-attention norm, MLP 256 -> 512 -> 256
    layer = ln + lin(d, 3 * d, False) + lin(d, d) + ln + lin(d, 2 * d) + lin(2 * d, d)
    stem = 3 * 4 * 4 * d + d  # the 4x4 patch conv with bias
    common = stem + 7 * layer + ln + lin(d, 10)
    assert EXPECTED_PARAMS["vit_lite_7_4"] == common + d + (n + 1) * d  # class token, positions incl. it
    assert EXPECTED_PARAMS["cvt_7_4"] == common + n * d + lin(d, 1)  # positions, SeqPool's Linear


def reference_compact_transformer(model, x, pool):
    """The paper's TransformerClassifier written out with `model`'s weights: patch conv -> (cls) +
    positions -> per layer x += MSA(LN(x)); x = LN(x); x += MLP(x) -> LN -> cls token or SeqPool -> Linear."""
    def norm(m, t):
        return F.layer_norm(t, m.normalized_shape, m.weight, m.bias, m.eps)

    conv = model.tokenizer.proj
    t = F.conv2d(x, conv.weight, conv.bias, stride=conv.stride).flatten(2).transpose(1, 2)
    if pool == "cls":
        t = torch.cat([model.cls_token.expand(len(t), -1, -1), t], dim=1)
    t = t + model.pos_embed
    for blk in model.blocks:
        a = blk.attn
        B, N, C = t.shape
        q, k, v = (norm(blk.pre_norm, t) @ a.qkv.weight.T).view(B, N, 3, a.heads, C // a.heads).permute(2, 0, 3, 1, 4)
        w = (q @ k.transpose(-2, -1) * (C // a.heads) ** -0.5).softmax(-1)
        t = t + F.linear((w @ v).transpose(1, 2).reshape(B, N, C), a.proj.weight, a.proj.bias)
        t = norm(blk.norm1, t)
        t = t + F.linear(F.gelu(F.linear(t, blk.mlp[0].weight, blk.mlp[0].bias)), blk.mlp[3].weight, blk.mlp[3].bias)
    t = norm(model.norm, t)
    if pool == "cls":
        z = t[:, 0]
    else:
        lin = model.pool.attention_pool
        z = (F.linear(t, lin.weight, lin.bias).softmax(dim=1) * t).sum(dim=1)
    return F.linear(z, model.head.weight, model.head.bias)


@pytest.mark.parametrize("name, pool", [("vit_lite_7_4", "cls"), ("cvt_7_4", "seq")])
def test_vit_lite_and_cvt_compute_the_written_out_classifier(name, pool):
    """At a small size (16x16, width 32, two layers, four heads), eval mode, float64, random weights."""
    model = build(name, 10, 16, 3, dim=32, depth=2, heads=4).double().eval()
    randomise(model)
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        want, got = reference_compact_transformer(model, x, pool), model(x)
    assert want.abs().max() > 0.1
    assert (got - want).abs().max().item() < 1e-9


def test_small_model_memorises_a_batch():
    """32 random images with random labels: a small LSA ViT must fit them (eval mode) in <= 150 steps."""
    torch.manual_seed(0)
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    model = vit_variants.build_vit_spt_lsa(10, dim=64, depth=1, heads=2, dim_head=32, mlp_dim=64)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        out = model(x)
        opt.zero_grad()
        F.cross_entropy(out, y).backward()
        opt.step()
        if (out.argmax(1) == y).all():
            break
    with torch.no_grad():
        acc = (model.eval()(x).argmax(1) == y).float().mean().item()
    assert acc >= 0.95


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


def randomise(module):
    """Every parameter ~ N(0, 0.2), LayerNorm gains 1 + N(0, 0.2): no zero bias or unit gain hides a mix-up."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
        for m in module.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.add_(1.0)


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
