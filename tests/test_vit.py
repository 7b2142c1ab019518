"""vit.py: sizes, the parameter count, and the attention maths against written-out references."""

import pytest
import torch
import torch.nn.functional as F

import vit


def test_default_vit_shape_and_parameter_count():
    model = vit.build_vit(10)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    # 64 patches of 4x4x3 -> 384; 65 tokens; 7 blocks of (qkv, out, 2 MLP layers, 2 LN); LN+Linear head.
    embed = 48 * 384 + 384 + 384 + 65 * 384
    block = 4 * (384 * 384 + 384) + 2 * (384 * 384 + 384) + 4 * 384
    head = 2 * 384 + 384 * 10 + 10
    expected = embed + 7 * block + head
    assert expected == 6_268_810
    assert sum(p.numel() for p in model.parameters()) == expected


def test_gap_and_presets():
    assert vit.build_vit(100, cls_token=False)(torch.randn(1, 3, 32, 32)).shape == (1, 100)
    small = vit.build_vit(10, preset="vit_small")
    assert len(small.blocks) == 12 and small.head[1].in_features == 384
    # A size given explicitly wins over the preset's.
    assert len(vit.build_vit(10, preset="vit_small", num_layers=3).blocks) == 3


def test_patchify_matches_the_original_layout():
    model = vit.build_vit(10, image_size=8, patch_size=4)
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float).view(2, 3, 8, 8)
    tokens = model.patchify(x)
    assert tokens.shape == (2, 4, 48)
    # Patch (row 0, col 1), pixel (1, 2), channel 2 sits at (1 * 4 + 2) * 3 + 2 in its token.
    assert tokens[1, 1, (1 * 4 + 2) * 3 + 2] == x[1, 2, 1, 4 + 2]


def reference_attention(attn, x, scale):
    """softmax(q k^T * scale) v, written out, in float64."""
    b, n, d = x.shape
    h = attn.head
    qkv = F.linear(x, attn.qkv.weight.double(), attn.qkv.bias.double())
    q, k, v = qkv.view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
    weights = torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(b, n, d)
    return F.linear(out, attn.out.weight.double(), attn.out.bias.double())


@pytest.mark.parametrize("maths", ["standard", "original"])
def test_sdpa_attention_matches_written_out(maths):
    torch.manual_seed(0)
    attn = vit.Attention(48, head=6, maths=maths)
    x = torch.randn(3, 17, 48)
    scale = 48 ** -0.5 if maths == "original" else 8 ** -0.5
    ref = reference_attention(attn, x.double(), scale)
    out = attn(x).double()
    assert ((out - ref).norm() / ref.norm()) < 1e-5
    # And the two maths really differ.
    other = reference_attention(attn, x.double(), 8 ** -0.5 if maths == "original" else 48 ** -0.5)
    assert ((out - other).norm() / ref.norm()) > 1e-2


def test_original_maths_has_gelu_after_the_mlp():
    standard = vit.MLP(8, 16, maths="standard")
    original = vit.MLP(8, 16, maths="original")
    original.load_state_dict(standard.state_dict())
    x = torch.randn(4, 8)
    assert torch.allclose(original(x), F.gelu(standard(x)))
    # Same parameters either way: the original is a drop-in for the published weights' shapes.
    assert sum(p.numel() for p in original.parameters()) == sum(p.numel() for p in standard.parameters())


def test_vit_learns_a_fixed_batch():
    torch.manual_seed(0)
    model = vit.build_vit(4, image_size=16, patch_size=4, num_layers=2, hidden=64, mlp_hidden=64, head=4)
    x, y = torch.randn(32, 3, 16, 16), torch.randint(0, 4, (32,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(60):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (model(x).argmax(-1) == y).float().mean() == 1.0
    assert loss.item() < 0.1
