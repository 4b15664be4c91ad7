"""Encoders: timm compatibility of every preset, masking invariances, token drop, bad input."""
import pytest, torch, timm
from masklab.encoders import (ENCODER_PRESETS, create_encoder, to_timm, MaskTokenViT, MaskTokenSwin, TokenDropViT,
                              apply_mask_token)
from masklab.masking import random_unit_masks, token_drop_indices

TINY = [n for n in ENCODER_PRESETS if n.endswith('tiny')]
FULL = [n for n in ENCODER_PRESETS if not n.endswith('tiny')]


@pytest.mark.parametrize('name', FULL)
def test_full_presets_match_timm_shapes(name):
    "Every official-size preset has exactly timm's parameters (plus mask_token), checked on the meta device"
    with torch.device('meta'):
        enc = create_encoder(name)
        plain = timm.create_model(enc.timm_name, **enc.timm_kwargs)
    ours = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in plain.state_dict().items()}
    extra = {'mask_token'} if hasattr(enc, 'mask_token') else set()
    assert set(ours) - set(theirs) == extra and set(theirs) <= set(ours)
    assert all(ours[k] == theirs[k] for k in theirs)


@pytest.mark.parametrize('name', TINY)
def test_tiny_presets_load_into_timm(name):
    enc = create_encoder(name).eval()
    plain = timm.create_model(enc.timm_name, **enc.timm_kwargs).eval()
    res = plain.load_state_dict(enc.state_dict(), strict=False)
    assert res.missing_keys == []
    assert res.unexpected_keys == ([] if isinstance(enc, TokenDropViT) else ['mask_token'])
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(plain.forward_features(x), enc.forward_features(x))
    torch.testing.assert_close(to_timm(enc).eval()(x), enc(x))


@pytest.mark.parametrize('name', ['simmim_vit_tiny', 'simmim_beit_tiny', 'simmim_swin_tiny'])
def test_masked_pixels_carry_no_information(name):
    enc = create_encoder(name).eval()
    p = enc.model_patch_size
    mask = random_unit_masks(2, 64, 16, p, 0.6, generator=torch.Generator().manual_seed(0))
    px = mask.repeat_interleave(p, 1).repeat_interleave(p, 2).bool()[:, None].expand(-1, 3, -1, -1)
    x = torch.randn(2, 3, 64, 64)
    y = torch.where(px, torch.randn_like(x) * 5, x)
    torch.testing.assert_close(enc.forward_map(y, mask), enc.forward_map(x, mask))
    out = enc.forward_map(x, mask)
    assert out.shape == (2, enc.num_features, 64 // enc.encoder_stride, 64 // enc.encoder_stride)
    # all masked: the output does not depend on the image at all
    full = torch.ones_like(mask)
    torch.testing.assert_close(enc.forward_map(x, full), enc.forward_map(torch.randn_like(x), full))


def test_gradient_reaches_mask_token():
    enc = create_encoder('simmim_swin_tiny')
    mask = random_unit_masks(2, 64, 16, 4, 0.6)
    out = enc.forward_map(torch.randn(2, 3, 64, 64), mask)
    out.pow(2).mean().backward()  # not .sum(): the sum of LayerNorm outputs over channels has no gradient
    assert enc.mask_token.grad is not None and enc.mask_token.grad.abs().sum() > 0
    assert 'mask_token' in enc.no_weight_decay()


def test_token_drop_counts_and_invariance():
    enc = create_encoder('msn_vit_tiny').eval()
    x = torch.randn(4, 3, 64, 64)
    assert enc.forward_features(x, patch_drop=0.15).shape == (4, 1 + 54, 64)  # floor(64 * 0.85) = 54
    keep = token_drop_indices(4, 64, 0.5, shared=False, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(keep[0], keep[1])
    out = enc(x, keep_idx=keep)
    # change only dropped patches of sample 0
    dropped = torch.ones(64, dtype=torch.bool); dropped[keep[0]] = False
    px = dropped.view(8, 8).repeat_interleave(8, 0).repeat_interleave(8, 1)
    y = x.clone(); y[0][:, px] = 7.0
    torch.testing.assert_close(enc(y, keep_idx=keep), out)
    # focal-size views: position embedding interpolated
    assert enc(torch.randn(3, 3, 24, 24), patch_drop=0.3).shape == (3, 64)
    assert enc.forward_features(x, norm=False).shape == (4, 65, 64)


def test_bad_input_names_the_argument():
    vit = create_encoder('simmim_vit_tiny')
    x = torch.randn(2, 3, 64, 64)
    with pytest.raises(ValueError, match=r'mask must be on the model-token grid \(B, h, w\) = \(2, 8, 8\)'):
        vit.forward_map(x, torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match='multiple of the patch size 8'): vit.forward_map(torch.randn(2, 3, 60, 60))
    with pytest.raises(ValueError, match='3 channels'): vit.forward_map(torch.randn(2, 1, 64, 64))
    with pytest.raises(TypeError, match='x must be a torch.Tensor'): vit.forward_map(x.numpy())
    with pytest.raises(TypeError, match='mask must be a torch.Tensor'): vit.forward_map(x, [[0]])
    with pytest.raises(ValueError, match="name must be one of"): create_encoder('resnet50')
    with pytest.raises(ValueError, match='patch_size must be square'):
        MaskTokenViT(img_size=64, patch_size=(8, 4), embed_dim=32, depth=1, num_heads=1)
    msn = create_encoder('msn_vit_tiny')
    with pytest.raises(ValueError, match='keep_idx must be a \\(B, K\\) tensor'): msn(x, keep_idx=torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match='keep_idx must index the 64 patch tokens'): msn(x, keep_idx=torch.full((2, 3), 64))


def test_apply_mask_token_by_hand():
    t = torch.arange(12.).view(1, 2, 2, 3)
    out = apply_mask_token(t, torch.tensor([[[1, 0], [0, 1]]]), torch.tensor([-1., -2., -3.]))
    assert out[0, 0, 0].tolist() == [-1, -2, -3] and out[0, 0, 1].tolist() == [3, 4, 5]
    assert out[0, 1, 1].tolist() == [-1, -2, -3]


# --- initialisation and position-embedding resizing as in the official code (issue 17) ---

def _mask_tokens(name, seeds=(0, 1, 2)):
    "The mask tokens of a tiny preset built under a few seeds, flattened together"
    out = []
    for s in seeds:
        torch.manual_seed(s)
        out.append(create_encoder(name).mask_token.detach().flatten())
    return torch.cat(out)


@pytest.mark.parametrize('name', ['simmim_vit_tiny', 'simmim_beit_tiny'])
def test_vit_mask_token_cut_at_one_std(name):
    "Official SimMIM ViT: trunc_normal_(std=.02, a=-std, b=std): values inside +-0.02, std about 0.54 * 0.02"
    t = _mask_tokens(name)  # 192 values
    assert t.abs().max() <= 0.02
    assert 0.0090 < t.std().item() < 0.0125


def test_swin_mask_token_is_timm_default_cut():
    "Official SimMIM Swin: trunc_normal_(std=.02) with timm's absolute cut-offs +-2, i.e. a plain normal"
    t = _mask_tokens('simmim_swin_tiny')  # 96 values
    assert t.abs().max() > 0.03
    assert 0.016 < t.std().item() < 0.025


def test_msn_cls_token_is_trunc_normal_002():
    "Official MSN deit.py: trunc_normal_(cls_token, std=.02); timm's ViT would give std 1e-6"
    stds = []
    for s in range(3):
        torch.manual_seed(s)
        stds.append(create_encoder('msn_vit_tiny').cls_token.std().item())
        torch.manual_seed(s)
        big = create_encoder('msn_vit_small', img_size=224, depth=1)
        assert 0.018 < big.cls_token.std().item() < 0.022
    assert all(0.015 < s < 0.025 for s in stds), stds


def _keys_cubic(t, A=-0.75):
    "Keys' cubic convolution kernel, the one PyTorch's bicubic uses"
    t = abs(t)
    if t <= 1: return (A + 2) * t ** 3 - (A + 3) * t ** 2 + 1
    if t < 2: return A * t ** 3 - 5 * A * t ** 2 + 8 * A * t - 4 * A
    return 0.0


def _official_msn_resize(pe_grid, npatch):
    """MSN's interpolate_pos_encoding in float64, written from its definition: a square grid g x g, scale factor
    s = sqrt(npatch / g**2), output floor(g * s), source position (i + 0.5) / s - 0.5 (align_corners=False), 4 taps
    of the cubic kernel, indices clamped at the border, no antialiasing. pe_grid: (g, g, D) -> (out, out, D)"""
    import math
    import numpy as np
    g = pe_grid.shape[0]
    s = math.sqrt(npatch / g ** 2)
    n = math.floor(g * s)
    M = np.zeros((n, g))
    for i in range(n):
        src = (i + 0.5) / s - 0.5
        i0 = math.floor(src)
        for k in (-1, 0, 1, 2):
            M[i, min(max(i0 + k, 0), g - 1)] += _keys_cubic(k - (src - i0))
    return np.einsum('ai,ijd,bj->abd', M, pe_grid.astype(np.float64), M)


@pytest.mark.parametrize('preset,over,new', [
    ('msn_vit_tiny', {}, 4),                                    # 8 x 8 -> 4 x 4 (a 32 px focal view)
    ('msn_vit_tiny', {}, 3),                                    # 8 x 8 -> 3 x 3
    ('msn_vit_tiny', {}, 12),                                   # 8 x 8 -> 12 x 12 (a larger view)
    ('msn_vit_small', dict(img_size=224, depth=1, embed_dim=48, num_heads=2), 6),  # ViT-S/16 grid 14 -> 6 (96 px)
])
def test_focal_pos_embed_is_official_bicubic(preset, over, new):
    import math
    enc = create_encoder(preset, **over).eval()
    g, D = enc.patch_embed.grid_size[0], enc.embed_dim
    with torch.no_grad():
        got = enc._pos_embed(torch.zeros(1, new, new, D))  # zero patch tokens: what remains is [CLS] and positions
    pe = enc.pos_embed.detach()
    ref = _official_msn_resize(pe[0, 1:].reshape(g, g, D).numpy(), new * new)
    torch.testing.assert_close(got[0, 1:].double(), torch.from_numpy(ref).reshape(new * new, D), rtol=0, atol=1e-6)
    torch.testing.assert_close(got[:, 0], (enc.cls_token + pe[:, :1])[:, 0].detach())
    # bit for bit the official call's output
    grid = pe[:, 1:].reshape(1, g, g, D).permute(0, 3, 1, 2)
    official = torch.nn.functional.interpolate(grid, scale_factor=math.sqrt(new * new / g ** 2), mode='bicubic')
    assert torch.equal(got[0, 1:], official.permute(0, 2, 3, 1).reshape(new * new, D))
    # the test can tell: timm's antialiased resize is far from it when shrinking
    if new < g:
        aa = torch.nn.functional.interpolate(grid, size=(new, new), mode='bicubic', antialias=True)
        assert (aa.permute(0, 2, 3, 1).reshape(new * new, D).double() - torch.from_numpy(ref).reshape(new * new, D)).abs().max() > 1e-3


def test_focal_view_forward_uses_official_resize():
    "A whole forward at a focal size equals the blocks run on tokens built with the official resize by hand"
    import math
    enc = create_encoder('msn_vit_tiny').eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        t = enc.patch_embed.proj(x).flatten(2).transpose(1, 2)
        grid = enc.pos_embed[:, 1:].reshape(1, 8, 8, -1).permute(0, 3, 1, 2)
        pos = torch.nn.functional.interpolate(grid, scale_factor=math.sqrt(16 / 64), mode='bicubic').flatten(2).transpose(1, 2)
        tokens = torch.cat([enc.cls_token.expand(2, -1, -1) + enc.pos_embed[:, :1], t + pos], 1)
        want = enc.norm(enc.blocks(enc.norm_pre(tokens)))
        torch.testing.assert_close(enc.forward_features(x), want)


def test_beit_init_is_official_simmim_vit():
    "Official SimMIM ViT: every trunc-normal (cls, Linear, patch conv) cut at +-1 std, conv bias 0, BEiT rescaling"
    import math
    torch.manual_seed(0)
    enc = create_encoder('simmim_beit_tiny')
    assert enc.cls_token.abs().max() <= 0.02
    assert enc.patch_embed.proj.weight.abs().max() <= 0.02 and torch.count_nonzero(enc.patch_embed.proj.bias) == 0
    for i, blk in enumerate(enc.blocks):
        for lin in (blk.attn.qkv, blk.mlp.fc1):
            assert lin.weight.abs().max() <= 0.02 and 0.0095 < lin.weight.std().item() < 0.0122
        for lin in (blk.attn.proj, blk.mlp.fc2):  # drawn the same way, then divided by sqrt(2 (i + 1))
            s = math.sqrt(2 * (i + 1))
            assert lin.weight.abs().max() <= 0.02 / s + 1e-9 and 0.0095 < lin.weight.std().item() * s < 0.0122
    assert torch.count_nonzero(enc.rel_pos_bias.relative_position_bias_table) == 0


def test_msn_patch_conv_is_kaiming_normal():
    "Official MSN deit.py: Conv2d kaiming_normal_(fan_in, relu), bias 0 (timm: PyTorch's default uniform)"
    import math
    torch.manual_seed(0)
    enc = create_encoder('msn_vit_tiny')
    w = enc.patch_embed.proj.weight
    assert torch.count_nonzero(enc.patch_embed.proj.bias) == 0
    fan_in = w[0].numel()
    assert abs(w.std().item() / math.sqrt(2 / fan_in) - 1) < 0.04  # 12288 draws
    assert w.abs().max() > 2 * math.sqrt(2 / fan_in)  # a normal, not a uniform
