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
