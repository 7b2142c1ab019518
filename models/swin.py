"""Swin-T for 32x32 (`swin_t`): Liu et al. 2021, "Swin Transformer: Hierarchical Vision Transformer
using Shifted Windows" (arXiv:2103.14030), built from torchvision's Swin components, with the window
attention through SDPA.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.swin_transformer import ShiftedWindowAttention, SwinTransformer, SwinTransformerBlock

from models import register_model
from models.layers import check_divisible


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
        check_divisible(image_size, patch_size * 2 ** (len(depths) - 1), "Swin")
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
