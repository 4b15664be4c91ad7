"""Property tests (hypothesis) for the losses and the transforms: random shapes, masks and values."""
import math
import numpy as np
import pytest, torch
from hypothesis import given, settings, strategies as st, HealthCheck
from masklab.simmim import simmim_loss
from masklab.msn import msn_loss
from masklab.data import simmim_transform, to_rgb

torch.set_num_threads(1)
S = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

@S
@given(B=st.integers(1, 3), rows=st.integers(1, 4), cols=st.integers(1, 4), p=st.sampled_from([1, 2, 4]), seed=st.integers(0, 10**6))
def test_simmim_loss_is_masked_mean_abs_error(B, rows, cols, p, seed):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(B, 3, rows * p, cols * p, generator=g), torch.randn(B, 3, rows * p, cols * p, generator=g)
    mask = (torch.rand(B, rows, cols, generator=g) < 0.5).float()
    mask[0, 0, 0] = 1.0  # at least one masked cell
    loss = simmim_loss(x, y, mask, p)
    m = mask.repeat_interleave(p, 1).repeat_interleave(p, 2).unsqueeze(1).expand_as(x).bool()
    n = m[:, 0].sum().item()  # masked pixel positions; the official loss divides by (n + 1e-5) * C
    assert math.isclose(float(loss), float((x - y).abs()[m].sum()) / (n + 1e-5) / 3, rel_tol=1e-5, abs_tol=1e-6)
    assert float(simmim_loss(x, x, mask, p)) == 0.0  # a perfect prediction costs nothing
    y2 = y.clone(); y2[~m] = 1e6  # visible pixels never count
    assert math.isclose(float(simmim_loss(x, y2, mask, p)), float(loss), rel_tol=1e-5, abs_tol=1e-6)
    N = B * rows * p * cols * p
    assert math.isclose(float(simmim_loss(x, y, mask, p, loss_on='all')), float((x - y).abs().sum()) / (N + 1e-5) / 3, rel_tol=1e-5, abs_tol=1e-6)

@S
@given(V=st.integers(1, 3), B=st.integers(2, 5), D=st.integers(2, 8), K=st.integers(2, 9), seed=st.integers(0, 10**6),
       tau=st.floats(0.05, 1.0), T=st.floats(0.1, 1.0), scale=st.floats(0.01, 100.0))
def test_msn_loss_is_finite_and_bounded(V, B, D, K, seed, tau, T, scale):
    g = torch.Generator().manual_seed(seed)
    a, t, p = (torch.randn(V * B, D, generator=g) * scale, torch.randn(B, D, generator=g) * scale, torch.randn(K, D, generator=g))
    out = msn_loss(a, t, p, tau=tau, T=T)
    for k in ('loss', 'ce', 'me_max', 'ent'): assert torch.isfinite(out[k]), k
    assert torch.allclose(out['probs'].sum(1), torch.ones(V * B), atol=1e-5)
    assert torch.allclose(out['targets'].sum(1), torch.ones(B), atol=1e-5)
    assert float(out['me_max']) >= -math.log(K) - 1e-4 and float(out['ce']) >= -1e-5  # ME-MAX is -H(mean p) >= -log K

@given(bad=st.sampled_from([0.0, -1.0, float('nan')]))
def test_msn_loss_rejects_bad_temperatures(bad):
    a, t, p = torch.randn(4, 3), torch.randn(4, 3), torch.randn(5, 3)
    with pytest.raises(ValueError, match='tau'): msn_loss(a, t, p, tau=bad)

@S
@given(h=st.integers(1, 64), w=st.integers(1, 64), size=st.sampled_from([8, 16, 32]), mode=st.sampled_from(['L', 'RGB', 'RGBA']), seed=st.integers(0, 1000))
def test_simmim_transform_any_image_gives_the_view_shape(h, w, size, mode, seed):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (h, w) if mode == 'L' else (h, w, len(mode)), dtype=np.uint8)
    torch.manual_seed(seed)
    v = simmim_transform(size)(to_rgb(arr))
    assert v.shape == (3, size, size) and v.dtype == torch.float32 and torch.isfinite(v).all()

@given(bad=st.one_of(st.integers(-5, 7), st.just(8.5), st.just('big')))
def test_simmim_transform_rejects_bad_sizes(bad):
    with pytest.raises((ValueError, TypeError), match='img_size'): simmim_transform(bad)
