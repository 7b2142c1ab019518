"""Tests of the transformer zoo's layers (models/layers.py, and the blocks of vit_variants, cait and
swin): the attention maths (SDPA against the written-out softmax, LSA's mask, CaiT's class attention,
Swin's shifted windows, bf16 autocast), the sin-cos embedding, SPT's shifts, patchify, DyT, and one
DropPath for the zoo. CPU only."""
import os
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import vit  # noqa: E402
from models import cait, layers, swin, vit_variants  # noqa: E402
from zoo_helpers import SMALL, build  # noqa: E402


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
