"""vit.py: sizes, the parameter count, the attention maths against written-out references, the
default (original) maths against an independent re-implementation of omihub777/ViT-CIFAR's
network with the same weights, and stochastic depth."""

import pytest
import torch
import torch.nn as nn
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


# --------------------------------------------------------------------------- parity with ViT-CIFAR
#
# An independent reference of omihub777/ViT-CIFAR's network, written from its published semantics
# (separate q, k, v Linears, scores / sqrt(hidden), GELU after the MLP's output layer, cls token
# first, LayerNorm + Linear head on token 0), so that `vit` (maths="original", the default) can be
# checked to compute the same function when given the same weights.


class RefMSA(nn.Module):
    def __init__(self, feats, head, dropout=0.0):
        super().__init__()
        self.head, self.feats = head, feats
        self.sqrt_d = feats ** 0.5  # the full hidden size, not the head dim
        self.q, self.k, self.v = (nn.Linear(feats, feats) for _ in range(3))
        self.o = nn.Linear(feats, feats)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        b, n, f = x.shape
        q, k, v = (lin(x).view(b, n, self.head, f // self.head).transpose(1, 2) for lin in (self.q, self.k, self.v))
        score = torch.softmax(torch.einsum("bhif,bhjf->bhij", q, k) / self.sqrt_d, dim=-1)
        attn = torch.einsum("bhij,bhjf->bihf", score, v)
        return self.dropout(self.o(attn.flatten(2)))


class RefEncoder(nn.Module):
    def __init__(self, feats, mlp_hidden, head, dropout=0.0):
        super().__init__()
        self.la1 = nn.LayerNorm(feats)
        self.msa = RefMSA(feats, head, dropout)
        self.la2 = nn.LayerNorm(feats)
        self.mlp = nn.Sequential(nn.Linear(feats, mlp_hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(mlp_hidden, feats), nn.GELU(), nn.Dropout(dropout))

    def forward(self, x):
        out = self.msa(self.la1(x)) + x
        return self.mlp(self.la2(out)) + out


class RefViTCIFAR(nn.Module):
    def __init__(self, in_c=3, num_classes=10, img_size=32, patch=8, num_layers=7, hidden=384, mlp_hidden=384,
                 head=12, is_cls_token=True):
        super().__init__()
        self.patch, self.patch_size = patch, img_size // patch  # `patch`: patches per side
        self.is_cls_token = is_cls_token
        f = self.patch_size ** 2 * in_c
        self.emb = nn.Linear(f, hidden)
        self.cls_token = nn.Parameter(torch.randn(1, 1, hidden)) if is_cls_token else None
        self.pos_emb = nn.Parameter(torch.randn(1, patch ** 2 + int(is_cls_token), hidden))
        self.enc = nn.Sequential(*[RefEncoder(hidden, mlp_hidden, head) for _ in range(num_layers)])
        self.fc = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, num_classes))

    def to_words(self, x):
        p = self.patch_size
        out = x.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 4, 5, 1)
        return out.reshape(x.shape[0], self.patch ** 2, -1)

    def forward(self, x):
        out = self.emb(self.to_words(x))
        if self.is_cls_token:
            out = torch.cat([self.cls_token.repeat(out.size(0), 1, 1), out], dim=1)
        out = self.enc(out + self.pos_emb)
        out = out[:, 0] if self.is_cls_token else out.mean(1)
        return self.fc(out)


def port(ref: RefViTCIFAR, ours: vit.ViT):
    """Copy the reference's weights into our ViT (q, k, v -> the fused qkv)."""
    with torch.no_grad():
        ours.embed.load_state_dict(ref.emb.state_dict())
        if ref.cls_token is not None:
            ours.cls_token.copy_(ref.cls_token)
        ours.pos_embed.copy_(ref.pos_emb)
        for blk, enc in zip(ours.blocks, ref.enc, strict=True):
            blk.norm1.load_state_dict(enc.la1.state_dict())
            blk.norm2.load_state_dict(enc.la2.state_dict())
            m = enc.msa
            blk.attn.qkv.weight.copy_(torch.cat([m.q.weight, m.k.weight, m.v.weight]))
            blk.attn.qkv.bias.copy_(torch.cat([m.q.bias, m.k.bias, m.v.bias]))
            blk.attn.out.load_state_dict(m.o.state_dict())
            blk.mlp.load_state_dict(enc.mlp.state_dict())  # same layout: Linear, GELU, Dropout, Linear, GELU, Dropout
        ours.head.load_state_dict(ref.fc.state_dict())


@pytest.mark.parametrize("cls_token", [True, False])
def test_default_vit_computes_vit_cifar(cls_token, capsys):
    """`vit` (default maths) gives ViT-CIFAR's logits with ViT-CIFAR's weights; "standard" does not."""
    torch.manual_seed(0)
    ref = RefViTCIFAR(is_cls_token=cls_token).eval()
    ours = vit.build_vit(10, cls_token=cls_token).eval()
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    port(ref, ours)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        want, got = ref(x), ours(x)
        standard = vit.build_vit(10, cls_token=cls_token, maths="standard").eval()
        standard.load_state_dict(ours.state_dict())
        other = standard(x)
    diff, std_diff = (got - want).abs().max().item(), (other - want).abs().max().item()
    with capsys.disabled():
        print(f"\n[parity cls_token={cls_token}] |logits| max {want.abs().max().item():.3f}; "
              f"original maths max diff {diff:.2e}; standard maths max diff {std_diff:.3f}")
    assert diff <= 1e-5
    assert std_diff > 1e-2


def test_drop_path_rates_rise_linearly():
    model = vit.build_vit(10, drop_path=0.1)
    rates = [m.p for m in model.modules() if isinstance(m, vit.DropPath)]
    assert rates == pytest.approx([0.1 * i / 6 for i in range(7)])
    assert [blk.drop_path.p for blk in model.blocks] == rates  # one per block, in block order
    # off by default: the published network has no stochastic depth
    assert all(m.p == 0.0 for m in vit.build_vit(10).modules() if isinstance(m, vit.DropPath))
    assert vit.drop_path_rates(0.3, 1) == [0.3]  # a one-block model still gets the rate asked for
    # it drops in training only
    model = vit.build_vit(10, image_size=16, num_layers=2, hidden=32, mlp_hidden=32, head=4, drop_path=0.5)
    x = torch.randn(8, 3, 16, 16)
    with torch.no_grad():
        torch.manual_seed(0)
        a = model.train()(x)
        torch.manual_seed(1)
        assert not torch.allclose(a, model(x))
        assert torch.equal(model.eval()(x), model(x))


def test_drop_path_module():
    dp = vit.DropPath(0.5)
    x = torch.ones(1000, 3)
    assert torch.equal(dp.eval()(x), x)
    torch.manual_seed(0)
    y = dp.train()(x)
    assert set(y.unique().tolist()) <= {0.0, 2.0}  # whole samples dropped, survivors scaled by 1/keep
    assert (y[:, 0:1] == y).all() and abs(y.mean().item() - 1) < 0.1
