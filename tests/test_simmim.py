"""SimMIM: head parameter counts, loss normalization, the model contract, the shipped checkpoint, the explorer."""
import os
os.environ.setdefault('MPLBACKEND', 'Agg')
import numpy as np, pytest, torch
from masklab.encoders import create_encoder
from masklab.simmim import (SimMIMHead, MLPHead, TransformerHead, SimMIM, simmim_loss, norm_targets, load_simmim,
                            save_simmim, build_simmim, demo_checkpoint_path, reconstruction_errors,
                            render_reconstruction, reconstruction_grid, ReconstructionExplorer, DEMO_CONFIG)
from masklab.core import normalize
from masklab.data import photo_crops, photos


def n_params(m): return sum(p.numel() for p in m.parameters())


def test_head_official_parameter_counts():
    assert n_params(SimMIMHead(1024, 32)) == 1024 * 3072 + 3072
    assert n_params(SimMIMHead(768, 16)) == 768 * 768 + 768
    assert SimMIMHead(96, 4, in_chans=1)(torch.randn(2, 96, 3, 5)).shape == (2, 1, 12, 20)


@pytest.mark.parametrize('cls', [SimMIMHead, MLPHead, TransformerHead])
def test_heads_check_embed_dim(cls):
    h = cls(64, 8)
    assert h(torch.randn(2, 64, 4, 4)).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match='embed_dim=64'): h(torch.randn(2, 65, 4, 4))
    with pytest.raises(TypeError, match='z must be a torch.Tensor'): h(np.zeros((2, 64, 4, 4)))


def test_loss_normalization_by_hand():
    x = torch.zeros(2, 3, 8, 8)
    rec = torch.zeros_like(x); rec[0] = 2.0; rec[1] = 5.0
    mask = torch.zeros(2, 2, 2, dtype=torch.long); mask[0, 0, 0] = 1; mask[1] = 1  # 16 + 64 masked pixels
    expected = (16 * 3 * 2 + 64 * 3 * 5) / (80 + 1e-5) / 3
    torch.testing.assert_close(simmim_loss(x, rec, mask, 4), torch.tensor(expected))
    torch.testing.assert_close(simmim_loss(x, rec, mask, 4, loss_on='all'), torch.tensor((2 + 5) / 2))
    assert simmim_loss(x, rec, torch.zeros_like(mask), 4).item() == 0.0


def test_loss_bad_input():
    x = torch.zeros(1, 3, 8, 8)
    with pytest.raises(ValueError, match=r'model-token grid \(B, h, w\) = \(1, 2, 2\)'): simmim_loss(x, x, torch.zeros(1, 8, 8), 4)
    with pytest.raises(ValueError, match='must divide the image size'): simmim_loss(x, x, torch.zeros(1, 2, 2), 3)
    with pytest.raises(ValueError, match='x_rec must have the shape of x'): simmim_loss(x, x[:, :1], torch.zeros(1, 2, 2), 4)
    with pytest.raises(ValueError, match="loss_on must be one of"): simmim_loss(x, x, torch.zeros(1, 2, 2), 4, loss_on='x')


def test_norm_targets_matches_unbiased_window_stats():
    x = torch.rand(1, 1, 9, 9)
    out = norm_targets(x, 5)
    win = x[0, 0, 2:7, 2:7]  # the full window of the centre pixel
    torch.testing.assert_close(out[0, 0, 4, 4], (x[0, 0, 4, 4] - win.mean()) / (win.var(unbiased=True) + 1e-6).sqrt())
    corner = x[0, 0, :3, :3]  # the border window is clipped (count_include_pad=False)
    torch.testing.assert_close(out[0, 0, 0, 0], (x[0, 0, 0, 0] - corner.mean()) / (corner.var(unbiased=True) + 1e-6).sqrt())
    with pytest.raises(ValueError, match='window must be odd'): norm_targets(x, 6)


@pytest.mark.parametrize('name', ['simmim_vit_tiny', 'simmim_beit_tiny', 'simmim_swin_tiny'])
@pytest.mark.parametrize('head', ['linear', 'mlp', 'transformer'])
def test_model_forward_backward(name, head):
    model = SimMIM(create_encoder(name), head, mask_patch_size=16, norm_target=head == 'mlp', norm_window=15)
    out = model(dict(image=torch.randn(2, 3, 64, 64)))
    assert set(out) == {'loss'} and out['loss'].ndim == 0
    out['loss'].backward()
    assert model.encoder.mask_token.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.head.parameters())


def test_model_mask_contract():
    model = SimMIM(create_encoder('simmim_vit_tiny'), mask_patch_size=32, mask_ratio=0.5).eval()
    x = torch.randn(3, 3, 64, 64)
    m = model.make_mask(x)
    assert m.shape == (3, 8, 8) and m.device == x.device and (m.sum((1, 2)) == 2 * 16).all()  # ceil(4 * .5) units
    with torch.no_grad():
        full = model(dict(image=x, mask=torch.ones(3, 8, 8, dtype=torch.long)))['loss']
        none = model(dict(image=x, mask=torch.zeros(3, 8, 8, dtype=torch.long)))['loss']
    assert full > 0 and none == 0
    with pytest.raises(ValueError, match='model-token grid'): model(dict(image=x, mask=torch.ones(3, 2, 2)))
    with pytest.raises(ValueError, match='multiple of the patch size'): model(dict(image=torch.randn(3, 3, 60, 60)))
    with pytest.raises(TypeError, match="batch must be a dict"): model(x)
    with pytest.raises(ValueError, match="head must be one of"): SimMIM(create_encoder('simmim_vit_tiny'), 'conv')
    with pytest.raises(ValueError, match='head.encoder_stride'): SimMIM(create_encoder('simmim_vit_tiny'), SimMIMHead(64, 16))


def test_save_load_roundtrip(tmp_path):
    cfg = dict(DEMO_CONFIG, encoder='simmim_vit_tiny', encoder_kwargs={})
    model = build_simmim(cfg).eval()
    save_simmim(model, tmp_path / 'm.safetensors', cfg)
    back = load_simmim(tmp_path / 'm.safetensors')
    x, m = torch.randn(2, 3, 64, 64), torch.ones(2, 8, 8)
    torch.testing.assert_close(back.reconstruct(x, m), model.reconstruct(x, m))
    (tmp_path / 'bad.safetensors').write_bytes(b'garbage')
    with pytest.raises(Exception): load_simmim(tmp_path / 'bad.safetensors')


def test_shipped_checkpoint_loads_offline_and_beats_the_fills():
    path = demo_checkpoint_path()
    assert path.is_file() and path.stat().st_size < 8 * 2**20
    model = load_simmim()
    ds = photo_crops(n_per_photo=6, size=64, seed=987)  # crops the checkpoint never saw
    x = torch.stack([normalize(torch.from_numpy(np.asarray(ds[i][0], np.float32) / 255).permute(2, 0, 1))
                     for i in range(len(ds))])
    errs = reconstruction_errors(model, x, seed=0)
    # clearly better than the mean colour, and than copying the nearest visible pixel (see 04_light_head)
    assert errs['model'] < 0.9 * errs['mean_colour'], errs
    assert errs['model'] < errs['nearest'], errs


def test_explorer_headless():
    model = load_simmim()
    ex = ReconstructionExplorer(model, dict(photos(['chelsea', 'coins'])))
    ex.image.value, ex.ratio.value, ex.unit.value, ex.seed.value = 'coins', 0.3, 8, 5
    fig = ex.result
    assert len(fig.axes) == 4 and '8 px units, 30%' in fig.axes[1].get_title()
    grid = reconstruction_grid(model, [photos(['chelsea'])[0][1]] * 2, [dict(seed=0), dict(mask_ratio=0.9, seed=1)])
    assert len(grid.axes) == 8
    with pytest.raises(ValueError, match='same length'): reconstruction_grid(model, [], [dict()])
    with pytest.raises(ValueError, match='input_size must be a multiple of mask_patch_size'):
        render_reconstruction(model, photos(['chelsea'])[0][1], mask_patch_size=12)


def test_loss_is_fp32_under_bf16_autocast():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 3, 32, 32, generator=g), torch.randn(2, 3, 32, 32, generator=g)
    mask = (torch.rand(2, 2, 2, generator=g) > 0.5).long()
    ref = simmim_loss(x, y, mask, 16)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got = simmim_loss(x, y.bfloat16(), mask, 16)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, simmim_loss(x, y.bfloat16().float(), mask, 16))


def test_reconstruction_follows_the_models_device():
    "render_reconstruction builds its inputs on the CPU; they must move to the model (meta stands in for CUDA)"
    from masklab.simmim import render_reconstruction
    model = SimMIM(create_encoder('simmim_vit_tiny', img_size=32), mask_patch_size=16).to('meta')
    with pytest.raises(NotImplementedError, match='meta'):  # before: a device-mismatch RuntimeError in the encoder
        render_reconstruction(model, np.zeros((40, 40, 3)))


def test_features_are_the_evaluation_features():
    from masklab.evaluate import simmim_features
    torch.manual_seed(0)
    model = SimMIM(create_encoder('simmim_vit_tiny', img_size=32), mask_patch_size=16)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model.features(x), simmim_features(model.encoder, x))


def test_explorer_readable_and_opens_fresh():
    """issue 19: titles at >= 9 pt, a plain-text line instead of the raw interactive(...) repr; a new explorer opens on
    the model's own setting whatever another explorer was set to"""
    model = load_simmim()
    imgs = dict(photos(['chelsea', 'coins']))
    other = ReconstructionExplorer(model, imgs)
    other.ratio.value, other.unit.value, other.seed.value = 0.3, 32, 5
    ex = ReconstructionExplorer(model, imgs)
    assert (ex.ratio.value, ex.unit.value, ex.seed.value) == (0.6, model.mask_patch_size, 0)
    assert all(ax.title.get_fontsize() >= 9 for ax in ex.result.axes)
    assert ex._repr_mimebundle_()['text/plain'] == '[ReconstructionExplorer: a live widget; run the notebook to use its controls]'
    with pytest.raises(ValueError, match='images must not be empty'): ReconstructionExplorer(model, {})
    with pytest.raises(TypeError, match='each setting must be a dict'): reconstruction_grid(model, [imgs['chelsea']], [3])


def test_library_equals_the_plain_torch_head_and_loss():
    "The lesson's minimal version: one linear layer per token (1x1 conv + pixel shuffle) and the masked L1"
    import torch.nn.functional as F
    torch.manual_seed(0)
    model = SimMIM(create_encoder('simmim_vit_tiny', img_size=32), mask_patch_size=16)
    x = torch.randn(3, 3, 32, 32)
    mask = model.make_mask(x, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        z = model.encoder.forward_map(x, mask)
        y = F.pixel_shuffle(F.conv2d(z, model.head.proj.weight, model.head.proj.bias), 8)
        m = mask.repeat_interleave(8, -2).repeat_interleave(8, -1).unsqueeze(1).float()
        l1 = ((x - y).abs() * m).sum() / (m.sum() + 1e-5) / 3
        torch.testing.assert_close(model.head(z), y)
        torch.testing.assert_close(model(dict(image=x, mask=mask))['loss'], l1)


def test_heavier_head_sizes_are_checked():
    with pytest.raises(ValueError, match=r'dim \(30\) must be a multiple of num_heads \(4\)'): TransformerHead(64, 8, dim=30)
    with pytest.raises(ValueError, match='depth must be >= 1'): TransformerHead(64, 8, depth=0)
    with pytest.raises(ValueError, match='hidden_dim must be >= 1'): MLPHead(64, 8, hidden_dim=-2)
    with pytest.raises(ValueError, match='images must be square'): SimMIM(create_encoder('simmim_vit_tiny')).make_mask(torch.zeros(1, 3, 64, 32))


def test_a_run_saved_as_a_demo_rebuilds_the_same_model(tmp_path):
    "save_run_demo: a pretrain run's SimMIM, its image size and record, loaded by load_simmim; other inputs refused"
    from masklab.simmim import save_run_demo
    from masklab.presets import PRESETS
    from masklab.train import pretrain
    from masklab.trainer import load_run
    cfg = {**PRESETS['tiny']['simmim'], 'device': 'cpu', 'eval': dict(knn=False, fewshot=[], heldout=0)}
    pretrain(cfg, out=tmp_path/'run', progress=False)
    p = save_run_demo(tmp_path/'run', tmp_path/'demo.safetensors', command='masklab pretrain --preset tiny')
    back, (run_model, run_cfg) = load_simmim(p), load_run(tmp_path/'run')
    assert back.config['img_size'] == run_cfg['img_size'] == 32 and back.config['command'].startswith('masklab')
    assert back.config['steps'] == 6 and back.encoder.patch_embed.img_size == (32, 32)
    x, m = torch.randn(2, 3, 32, 32), back.make_mask(torch.zeros(2, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(back.reconstruct(x, m), run_model.reconstruct(x, m))
    with pytest.raises(ValueError, match='no summary.json'): save_run_demo(tmp_path, tmp_path/'x.safetensors')
    assert not (tmp_path/'x.safetensors').exists()


def test_the_digits_demo_completes_held_out_digits():
    "The shipped digits checkpoint: a mnist-preset run past the plateau, better than copying on digits it never saw"
    from masklab.data import mnist
    from masklab.evaluate import eval_transform
    from masklab.train import heldout_split
    model = load_simmim(demo='digits')
    assert model.config['data'] == 'mnist' and model.config['steps'] == 3968
    assert demo_checkpoint_path('digits').stat().st_size < 2 * 2**20
    ds = mnist()
    te = heldout_split(ds, dict(heldout=0.2))[1][:128]
    x = torch.stack([eval_transform(32)(ds[int(i)][0]) for i in te])
    errs = reconstruction_errors(model, x, seed=0)
    assert errs['model'] < 0.85 * errs['nearest'] and errs['model'] < 0.7 * errs['median_image'], errs
    with pytest.raises(ValueError, match="demo must be one of 'photos', 'digits'"): load_simmim(demo='faces')


def test_reconstruct_draws_held_out_digits_for_an_mnist_run(tmp_path):
    "A run folder given to `masklab reconstruct` carries its data, so an MNIST run draws digits, not photos"
    from masklab.cli import load_simmim_checkpoint, default_images
    from masklab.presets import PRESETS
    from masklab.train import pretrain
    cfg = {**PRESETS['tiny']['simmim'], 'data': 'mnist', 'device': 'cpu', 'eval': dict(knn=False, fewshot=[], heldout=0)}
    pretrain(cfg, out=tmp_path/'run', progress=False)
    model = load_simmim_checkpoint(str(tmp_path/'run'))
    assert model.config['data'] == 'mnist' and model.config['img_size'] == 32
    imgs = default_images(model)
    assert len(imgs) == 4 and imgs[0].size == (28, 28)
