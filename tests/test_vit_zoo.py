"""Tests of vit_zoo.py: every model builds, trains a step, has its expected size; the attention maths
(SDPA against the written-out softmax, LSA's mask, Swin's shifted windows), the sin-cos embedding,
DyT and DropPath; and a small model memorises a batch. CPU only."""
import os
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import vit_zoo  # noqa: E402

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
}


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


def test_table_is_complete():
    assert set(vit_zoo.MODELS) == set(EXPECTED_PARAMS)
    for name, fn in vit_zoo.MODELS.items():
        assert fn.__name__ == f"build_{name}"


@pytest.mark.parametrize("name", list(vit_zoo.MODELS))
def test_builds_trains_and_counts(name):
    torch.manual_seed(0)
    model = vit_zoo.MODELS[name](10, dropout=0.1, drop_path=0.1, some_unknown_option=1, depth=None)
    assert n_params(model) == EXPECTED_PARAMS[name]

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
    # ConvMixer-256/8 (kernel 5, patch 2): 0.6M (Trockman & Kolter 2022, CIFAR-10 table).
    assert abs(EXPECTED_PARAMS["convmixer"] / 0.6e6 - 1) < 0.02
    # MobileViT-XXS, ImageNet head: 1.27M (ml-cvnets / timm; the paper rounds to 1.3M). The network
    # has no position embedding, so the count does not depend on the image size.
    assert abs(n_params(vit_zoo.build_mobilevit_xxs(1000)) / 1.27e6 - 1) < 0.01
    # Swin-T, ImageNet head: 28.29M (torchvision swin_t). Patch 2 / window 4 change it by only the
    # patch-embedding conv and the smaller relative-position tables.
    assert abs(n_params(vit_zoo.build_swin_t(1000)) / 28.29e6 - 1) < 0.005


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
}


@pytest.mark.parametrize("name,in_chans,image_size", [
    ("convmixer", 1, 32), ("simple_vit", 3, 64), ("vit_spt_lsa", 1, 64), ("cait", 1, 32),
    ("swin_t", 3, 64), ("mlp_mixer", 1, 64), ("mobilevit_xxs", 1, 64), ("cct_7_3x1", 1, 64)])
def test_other_channels_and_sizes(name, in_chans, image_size):
    torch.manual_seed(0)
    model = vit_zoo.MODELS[name](10, image_size, in_chans, **SMALL[name]).eval()
    x = torch.randn(2, in_chans, image_size, image_size)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_size_overrides_and_bad_image_size():
    small = vit_zoo.build_simple_vit(10, depth=2, dim=64, heads=2, mlp_dim=128)
    assert len(small.blocks) == 2 and small.head.in_features == 64
    with pytest.raises(ValueError):
        vit_zoo.build_simple_vit(10, image_size=30)


# --------------------------------------------------------------------------- attention maths


def reference_attention(attn: vit_zoo.Attention, x):
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
    attn = vit_zoo.Attention(48, heads=3, dim_head=16, qkv_bias=False, lsa=lsa).double().eval()
    if lsa:  # a learned temperature, not the initial 1/sqrt(d)
        attn.temperature.data = torch.tensor([0.1, 0.5, 2.0], dtype=torch.float64)
    x = torch.randn(2, 17, 48, dtype=torch.float64)
    got, want = attn(x), reference_attention(attn, x)
    assert ((got - want).norm() / want.norm()).item() < 1e-6


def test_lsa_mask_removes_self_attention():
    torch.manual_seed(0)
    attn = vit_zoo.Attention(32, heads=2, dim_head=16, lsa=True)
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
    ca = vit_zoo.ClassAttention(32, heads=4).double().eval()
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
    attn = vit_zoo.WindowAttentionSDPA(24, [4, 4], [shift, shift], num_heads=3).double().eval()
    nn.init.normal_(attn.relative_position_bias_table, std=1.0)  # make the bias matter
    x = torch.randn(2, 8, 8, 24, dtype=torch.float64)
    want = shifted_window_attention(
        x, attn.qkv.weight, attn.proj.weight, attn.get_relative_position_bias(), attn.window_size, attn.num_heads,
        shift_size=attn.shift_size, qkv_bias=attn.qkv.bias, proj_bias=attn.proj.bias, training=False)
    got = attn(x)
    assert ((got - want).norm() / want.norm()).item() < 1e-6


def test_swin_windows_follow_the_feature_map():
    model = vit_zoo.build_swin_t(10, depths=(2, 2, 2, 2))
    blocks = [m for m in model.modules() if isinstance(m, vit_zoo.WindowAttentionSDPA)]
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
    for model in (vit_zoo.build_vit_spt_lsa(10, depth=1), vit_zoo.build_swin_t(10, depths=(2, 2, 2, 2))):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = model.eval()(x)
        assert out.shape == (2, 10) and torch.isfinite(out.float()).all()


# --------------------------------------------------------------------------- building blocks


def test_sincos_embedding_known_values():
    pe = vit_zoo.posemb_sincos_2d(4, 4, 16)  # channels: [sin x | cos x | sin y | cos y], 4 each
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
    model = vit_zoo.build_simple_vit(10, depth=1)
    torch.testing.assert_close(model.pos_embed[0], vit_zoo.posemb_sincos_2d(8, 8, 384))
    assert "pos_embed" not in dict(model.named_parameters()) and "pos_embed" not in model.state_dict()


def test_shifted_patch_tokenization():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 4, 4] = 1.0
    shifted = vit_zoo.ShiftedPatchTokenization.with_shifts(x, 2)
    assert shifted.shape == (1, 5, 8, 8) and torch.equal(shifted[:, 0], x[:, 0])
    # the pixel moves by half a patch along each diagonal
    moved = {tuple(c.nonzero()[0].tolist()) for c in shifted[0, 1:]}
    assert moved == {(6, 6), (6, 2), (2, 6), (2, 2)}
    spt = vit_zoo.ShiftedPatchTokenization(3, 32, 4)
    assert spt(torch.randn(2, 3, 32, 32)).shape == (2, 64, 32) and spt.proj.in_features == 5 * 3 * 16


def test_patchify_order():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)  # channels 0..15 and 16..31
    p = vit_zoo.patchify(x, 2)
    assert p.shape == (1, 4, 8)
    assert p[0, 0].tolist() == [0, 16, 1, 17, 4, 20, 5, 21]  # top-left patch as (row, col, channel)
    assert p[0, 1].tolist()[:2] == [2, 18]


def test_dynamic_tanh():
    dyt = vit_zoo.DynamicTanh(4)
    assert dyt.alpha.shape == () and dyt.alpha.item() == 0.5
    dyt.weight.data = torch.tensor([1.0, 2.0, 3.0, 4.0])
    dyt.bias.data = torch.tensor([0.0, 1.0, 0.0, -1.0])
    x = torch.randn(3, 4)
    torch.testing.assert_close(dyt(x), dyt.weight * torch.tanh(0.5 * x) + dyt.bias)
    model = vit_zoo.build_vit_dyt(10, depth=2)
    assert not any(isinstance(m, nn.LayerNorm) for m in model.modules())
    assert sum(isinstance(m, vit_zoo.DynamicTanh) for m in model.modules()) == 2 * 2 + 1


def test_drop_path():
    dp = vit_zoo.DropPath(0.5)
    x = torch.ones(1000, 3)
    assert torch.equal(dp.eval()(x), x)
    torch.manual_seed(0)
    y = dp.train()(x)
    assert set(y.unique().tolist()) <= {0.0, 2.0}  # whole samples dropped, survivors scaled by 1/keep
    assert (y[:, 0:1] == y).all() and abs(y.mean().item() - 1) < 0.1


def test_cct_sequence_pooling_and_tokens():
    model = vit_zoo.build_cct_7_3x1(10)
    assert model.pos_embed.shape == (1, 16 * 16, 256)  # conv stride 1 + maxpool 3/2: 32 -> 16
    assert not hasattr(model, "cls_token")
    assert model.pool.attention_pool.out_features == 1


def test_small_model_memorises_a_batch():
    """32 random images with random labels: a small LSA ViT must fit them (eval mode) in <= 150 steps."""
    torch.manual_seed(0)
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    model = vit_zoo.build_vit_spt_lsa(10, dim=64, depth=1, heads=2, dim_head=32, mlp_dim=64)
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
