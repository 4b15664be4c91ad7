"Property tests for masklab.masking over random valid sizes (hypothesis)"
import math
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from masklab.masking import (MaskGenerator, random_unit_masks, square_mask, blockwise_mask, token_drop_indices,
                             token_drop_keep, drop_mask, make_mask, upsample_mask, avg_dist, distance_map,
                             nearest_fill, STRATEGIES)

@st.composite
def sizes(draw):
    "(input_size, mask_patch_size, model_patch_size) that divide as SimMIM requires"
    model = draw(st.integers(1, 8))
    scale = draw(st.integers(1, 4))
    rand = draw(st.integers(1, 8))
    return rand * scale * model, scale * model, model

ratios = st.floats(0, 1, allow_nan=False)

@settings(max_examples=60, deadline=None)
@given(sizes(), ratios, st.integers(0, 2**32))
def test_generator_semantics(sz, ratio, seed):
    inp, unit, model = sz
    g = MaskGenerator(inp, unit, model, ratio, seed=seed)
    m = g()
    rand, scale = inp // unit, unit // model
    assert m.shape == (inp // model, inp // model) and m.dtype.kind == 'i'
    assert set(np.unique(m)) <= {0, 1}
    assert g.mask_count == int(math.ceil(rand ** 2 * ratio))
    assert m.sum() == g.mask_count * scale ** 2
    blocks = m.reshape(rand, scale, rand, scale)
    assert (blocks.min(axis=(1, 3)) == blocks.max(axis=(1, 3))).all()
    assert np.array_equal(m, MaskGenerator(inp, unit, model, ratio, seed=seed)())

@settings(max_examples=40, deadline=None)
@given(sizes(), ratios, st.integers(1, 16), st.integers(0, 2**32))
def test_batch_matches_semantics(sz, ratio, bs, seed):
    inp, unit, model = sz
    g = MaskGenerator(inp, unit, model, ratio)
    mb = g.batch(bs, generator=torch.Generator().manual_seed(seed))
    assert mb.shape == (bs, inp // model, inp // model)
    assert (mb.sum((1, 2)) == g.mask_count * (unit // model) ** 2).all()
    again = random_unit_masks(bs, inp, unit, model, ratio, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(mb, again)

@settings(max_examples=40, deadline=None)
@given(sizes(), ratios, st.sampled_from(STRATEGIES), st.integers(0, 1000))
def test_every_strategy_on_token_grid(sz, ratio, strategy, seed):
    inp, unit, model = sz
    m = make_mask(strategy, inp, unit, model, ratio, seed=seed)
    assert m.shape == (inp // model, inp // model)
    assert set(np.unique(m)) <= {0, 1}
    assert np.array_equal(m, make_mask(strategy, inp, unit, model, ratio, seed=seed))

@settings(max_examples=40, deadline=None)
@given(sizes(), ratios, st.integers(0, 1000))
def test_blockwise_never_overshoots(sz, ratio, seed):
    inp, unit, model = sz
    rand, scale = inp // unit, unit // model
    m = blockwise_mask(inp, unit, model, ratio, min_units=1, seed=seed)
    assert m.sum() <= math.ceil(rand ** 2 * ratio) * scale ** 2

@settings(max_examples=40, deadline=None)
@given(st.integers(1, 400), st.floats(0, 1), st.integers(1, 8), st.booleans(), st.integers(0, 1000))
def test_token_drop(n, drop, bs, shared, seed):
    keep = token_drop_indices(bs, n, drop, shared=shared, generator=torch.Generator().manual_seed(seed))
    k = token_drop_keep(n, drop)
    assert k == math.floor(n * (1 - drop)) and keep.shape == (bs, k)
    assert (keep.diff(dim=1) > 0).all() and (keep >= 0).all() and (keep < n).all()
    if shared: assert (keep == keep[:1]).all()
    assert (drop_mask(keep, n).sum(1) == n - k).all()

@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(0, 1000), st.floats(0.05, 0.95))
def test_avg_dist_properties(h, w, seed, p):
    m = np.random.default_rng(seed).random((h, w)) < p
    d = avg_dist(m)
    if not m.any(): assert d == 0.0
    elif m.all(): assert d == float('inf')
    else:
        assert 1.0 <= d <= math.hypot(h, w)
        assert d == pytest.approx(distance_map(m)[m].mean())
        # scaling the mask by s scales AvgDist by about s (exact for the centre-to-centre part)
        assert avg_dist(upsample_mask(m, 2)) >= d
        assert avg_dist(m.T) == pytest.approx(d)

@settings(max_examples=30, deadline=None)
@given(st.integers(2, 10), st.integers(2, 10), st.integers(0, 1000))
def test_nearest_fill_keeps_visible(h, w, seed):
    rng = np.random.default_rng(seed)
    img, m = rng.random((h, w, 3)).astype(np.float32), rng.random((h, w)) < 0.5
    if m.all(): m[0, 0] = False
    out = nearest_fill(img, m)
    assert np.array_equal(out[~m], img[~m])
    vis = img[~m].reshape(-1, 3)
    assert all(any(np.array_equal(px, v) for v in vis) for px in out[m])

@pytest.mark.parametrize('bad, exc, msg', [
    (lambda: MaskGenerator(100, 32, 4, 0.6), ValueError, 'input_size must be a multiple of mask_patch_size'),
    (lambda: MaskGenerator(192, 32, 5, 0.6), ValueError, 'mask_patch_size must be a multiple of model_patch_size'),
    (lambda: MaskGenerator(192, 32, 4, -0.1), ValueError, 'mask_ratio must be >= 0.0, got -0.1'),
    (lambda: MaskGenerator(192, 32, 4, True), TypeError, 'mask_ratio must be a number'),
    (lambda: MaskGenerator(192, 32, 4, 0.6, seed=-1), ValueError, 'seed must be >= 0'),
    (lambda: random_unit_masks(2.0), TypeError, 'batch_size must be an integer'),
    (lambda: avg_dist(np.zeros(5)), ValueError, 'mask must be 2-D, got shape (5,)'),
    (lambda: avg_dist('mask'), TypeError, 'mask must be a numpy.ndarray or torch.Tensor'),
    (lambda: token_drop_indices(2, 0, 0.5), ValueError, 'num_patches must be >= 1, got 0'),
    (lambda: token_drop_indices(2, 196, 1.2), ValueError, 'patch_drop must be <= 1.0, got 1.2'),
    (lambda: make_mask('ring'), ValueError, "strategy must be one of"),
])
def test_bad_input(bad, exc, msg):
    with pytest.raises(exc, match=None) as e: bad()
    assert msg in str(e.value)


# issue 19: the lesson's diagram, the minimal version and the mask explorer's figures
from masklab.masking import pipeline_diagram, PIPELINE_PARTS, render_mask, mask_grid

def test_pipeline_diagram_lights_only_the_component():
    for method, parts in PIPELINE_PARTS.items():
        for part in parts:
            ax = pipeline_diagram(method, part).axes[0]
            lit = [p for p in ax.patches if p.get_linewidth() == 2]
            assert lit, (method, part)
            # every lit box carries the part's label (MSN lights both branches' copies of a shared part)
            assert len(lit) == (2 if (method, part) in {('msn', 'encoder'), ('msn', 'projection'), ('msn', 'prototypes'),
                                                        ('msn', 'views')} else 1)
    assert not [p for p in pipeline_diagram('simmim').axes[0].patches if p.get_linewidth() == 2]
    with pytest.raises(ValueError, match="method must be one of 'simmim', 'msn'"): pipeline_diagram('mae')
    with pytest.raises(ValueError, match="highlight must be one of"): pipeline_diagram('simmim', 'sharpening')

def test_random_unit_masks_equal_the_plain_torch_draw():
    "The lesson's minimal version: rand -> argsort -> first ceil(units * ratio) -> repeat onto tokens"
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    lib = random_unit_masks(6, 192, 32, 4, 0.6, generator=g1)
    n, count, s = 6, math.ceil(36 * 0.6), 8
    chosen = torch.rand(6, n * n, generator=g2).argsort(dim=1)[:, :count]
    units = torch.zeros(6, n * n, dtype=torch.long).scatter_(1, chosen, 1).view(6, n, n)
    assert torch.equal(lib, units.repeat_interleave(s, 1).repeat_interleave(s, 2))

@settings(max_examples=25, deadline=None)
@given(st.integers(2, 12), st.integers(2, 12), st.integers(0, 2**32), st.floats(0.05, 0.95))
def test_avg_dist_equals_brute_force(h, w, seed, p):
    m = np.random.default_rng(seed).random((h, w)) < p
    if m.all() or not m.any(): return
    yx = np.argwhere(np.ones((h, w)))
    d = np.sqrt(((yx[m.ravel()][:, None] - yx[~m.ravel()][None]) ** 2).sum(-1)).min(1).mean()
    assert avg_dist(m) == pytest.approx(d, rel=1e-9)

def test_render_mask_says_why_a_blockwise_mask_is_empty():
    img = np.random.default_rng(0).random((64, 64, 3))
    fig = render_mask(img, 'blockwise', 64, 0.6, input_size=192)  # 3x3 units cannot hold a 16-unit block
    assert fig.axes[1].get_title().endswith(' 0% masked')
    assert fig.axes[1].texts and fig.axes[1].texts[0].get_text().startswith('no block fits')
    assert 'may add 6 of 3x3 units' in fig.axes[1].texts[0].get_text().replace('\n', ' ')
    assert not render_mask(img, 'blockwise', 16, 0.6, input_size=192).axes[1].texts  # a mask that fits says nothing

def test_render_mask_all_hidden_and_font_sizes():
    img = np.random.default_rng(0).random((64, 64, 3))
    fig = render_mask(img, 'random', 32, 1.0)
    assert fig.axes[2].get_title() == 'AvgDist inf: no pixel visible'
    assert all(ax.title.get_fontsize() >= 9 for ax in fig.axes)
    assert render_mask(img, 'random', 32, 0.6).axes[2].get_title().startswith("AvgDist ")

@pytest.mark.parametrize('bad, exc, msg', [
    (lambda: mask_grid(np.zeros((8, 8, 3)), []), ValueError, 'settings must not be empty'),
    (lambda: mask_grid(np.zeros((8, 8, 3)), ['random']), TypeError, 'each setting must be a dict'),
    (lambda: token_drop_indices(2, 196, 0.5, shared='yes'), TypeError, 'shared must be a bool'),
    (lambda: drop_mask(torch.zeros(5, dtype=torch.long), 196), ValueError, 'keep_idx must be a 2-D tensor (B, keep)'),
    (lambda: nearest_fill(np.zeros((4, 4)), np.ones((4, 4))), ValueError, 'mask hides every pixel'),
    (lambda: nearest_fill(np.zeros((4, 4)), np.zeros((3, 4))), ValueError, 'mask has shape (3, 4), the image is (4, 4)'),
    (lambda: blockwise_mask(224, 16, 16, 0.4, min_units=0), ValueError, 'min_units must be >= 1'),
])
def test_bad_input_of_the_helpers(bad, exc, msg):
    with pytest.raises(exc) as e: bad()
    assert msg in str(e.value)
