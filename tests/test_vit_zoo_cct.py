"""Tests of models/cct.py: CCT's sequence pooling and tokens, ViT-Lite-7/4 and CVT-7/4 (class token
against SeqPool, options arriving, parameter counts by formula, and the logits against the paper's
TransformerClassifier written out with the same weights). CPU only."""
import os
import sys

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import vit  # noqa: E402
from models import cct, layers  # noqa: E402
from zoo_helpers import EXPECTED_PARAMS, build, n_params, randomise  # noqa: E402


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
