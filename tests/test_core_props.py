"""Property-based tests of patchify / unpatchify and the argument checks."""
import torch, pytest
from hypothesis import given, settings, strategies as st
from masklab.core import patchify, unpatchify, check_int, derive_seed

@settings(max_examples=60, deadline=None)
@given(B=st.integers(1, 3), C=st.integers(1, 5), rows=st.integers(1, 6), cols=st.integers(1, 6),
       ph=st.integers(1, 5), pw=st.integers(1, 5))
def test_patchify_roundtrip(B, C, rows, cols, ph, pw):
    x = torch.randn(B, C, rows * ph, cols * pw)
    t = patchify(x, (ph, pw))
    assert t.shape == (B, rows * cols, ph * pw * C)
    assert torch.equal(unpatchify(t, (ph, pw), grid=(rows, cols), channels=C), x)
    # token k is the patch at (k // cols, k % cols), laid out (ph, pw, C)
    k = (rows * cols) // 2
    r, c = divmod(k, cols)
    assert torch.equal(t[0, k].reshape(ph, pw, C), x[0, :, r*ph:(r+1)*ph, c*pw:(c+1)*pw].permute(1, 2, 0))

@settings(max_examples=40, deadline=None)
@given(H=st.integers(1, 40), W=st.integers(1, 40), p=st.integers(1, 12))
def test_patchify_rejects_sizes_that_do_not_divide(H, W, p):
    x = torch.zeros(1, 3, H, W)
    if H % p or W % p:
        with pytest.raises(ValueError, match='must divide'): patchify(x, p)
    else: assert patchify(x, p).shape[1] == (H // p) * (W // p)

@pytest.mark.parametrize('bad', [0, -3, (4, 0), (2, 2, 2), 2.0, '4', True])
def test_bad_patch_sizes(bad):
    with pytest.raises((ValueError, TypeError), match='patch_size'): patchify(torch.zeros(1, 3, 8, 8), bad)

def test_wrong_types():
    with pytest.raises(TypeError, match='torch.Tensor'): patchify([[1]], 2)
    with pytest.raises(ValueError, match='grid is needed'): unpatchify(torch.zeros(1, 6, 12), 2)
    with pytest.raises(TypeError, match='seed must be an integer'): derive_seed('0')
    with pytest.raises(ValueError, match='seed must be >= 0'): derive_seed(-1)
