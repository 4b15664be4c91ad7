"""The batched views (decoded in the loader, made on the training device) against the per-image PIL path.

Statistics, not pixels: the two paths draw different random numbers, so the tests compare distributions (the crop's
area and aspect ratio against torchvision's own RandomResizedCrop.get_params, every rate and factor against the
recipe, per-channel output mean and std on the bundled photos), each operation against its PIL counterpart on fixed
inputs, and the batch dict's structure exactly."""
import itertools, math
import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image, ImageFilter
from scipy.stats import ks_2samp, kstest, chisquare
from torchvision.transforms.v2 import functional as TF
from masklab.data import (VIEW_PARAMS, ViewSpec, BatchViews, DecodedViews, MSNViews, Views, adjust_brightness_,
                          adjust_contrast_, adjust_hue_, adjust_saturation_, channel_stats, collate_decoded, collate_views,
                          crop_resize, draw_view_params, gaussian_blur_, image_list, msn_view_specs, photos, view_pipeline)
from masklab.views import _gray

COL = {k: i for i, k in enumerate(VIEW_PARAMS)}

@pytest.fixture(scope='module')
def ph(): return photos()

def _params(spec, n, H, W, seed=0):
    torch.manual_seed(seed)
    return torch.cat([draw_view_params([spec] * 50, H, W) for _ in range(n // 50)])

@pytest.mark.parametrize('H,W,scale', [(427, 640, (0.3, 1.0)), (512, 512, (0.05, 0.3)), (100, 1000, (0.67, 1.0))])
def test_crop_distribution_is_torchvisions(H, W, scale):
    "area fraction and log aspect ratio: same distribution as RandomResizedCrop.get_params (the PIL path's), fallback included"
    n = 3000
    ours = _params(ViewSpec(64, scale), n, H, W)
    torch.manual_seed(1)
    ref = torch.tensor([T.RandomResizedCrop.get_params(torch.empty(3, H, W), list(scale), [3/4, 4/3]) for _ in range(n)]).float()
    ow, oh, rw, rh = ours[:, COL['w']], ours[:, COL['h']], ref[:, 3], ref[:, 2]
    assert ks_2samp((ow * oh).numpy(), (rw * rh).numpy()).pvalue > 1e-3
    assert ks_2samp(torch.log(ow / oh).numpy(), torch.log(rw / rh).numpy()).pvalue > 1e-3
    # boxes lie inside the image, and their position is spread like torchvision's
    x0, y0 = ours[:, COL['x0']], ours[:, COL['y0']]
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + ow <= W).all() and (y0 + oh <= H).all()
    assert ks_2samp((x0 / (W - ow + 1)).numpy(), (ref[:, 1] / (W - rw + 1)).numpy()).pvalue > 1e-3
    if W / H > 4:  # a very wide image at a high scale mostly falls back to the centre crop: the same share in both
        fb_ours, fb_ref = float((ow == round(H * 4 / 3)).float().mean()), float((rw == round(H * 4 / 3)).float().mean())
        assert fb_ref > 0.3 and abs(fb_ours - fb_ref) < 0.05

def test_rates_factors_and_order():
    n = 5000
    p = _params(ViewSpec(96, (0.05, 0.3), colour=True), n, 300, 400)
    for col, rate in (('flip', 0.5), ('jitter', 0.8), ('gray', 0.2), ('sigma', 0.5)):
        k = float((p[:, COL[col]] > 0).sum())
        assert abs(k - n * rate) < 5 * math.sqrt(n * rate * (1 - rate)), (col, k / n)
    for col, lo, hi in (('brightness', 0.6, 1.4), ('contrast', 0.6, 1.4), ('saturation', 0.6, 1.4), ('hue', -0.1, 0.1)):
        assert kstest(p[:, COL[col]].numpy(), 'uniform', args=(lo, hi - lo)).pvalue > 1e-3, col
    s = p[:, COL['sigma']]
    assert kstest(s[s > 0].numpy(), 'uniform', args=(0.1, 1.9)).pvalue > 1e-3
    orders = p[:, COL['order0']:COL['order3'] + 1].long()
    assert (orders.sort(1).values == torch.arange(4)).all()  # each row a permutation of the four operations
    perms = {q: i for i, q in enumerate(itertools.permutations(range(4)))}
    counts = np.bincount([perms[tuple(r)] for r in orders.tolist()], minlength=24)
    assert chisquare(counts).pvalue > 1e-3
    # independence: jitter and grayscale are drawn separately
    both = float(((p[:, COL['jitter']] > 0) & (p[:, COL['gray']] > 0)).float().mean())
    assert abs(both - 0.16) < 0.03
    plain = _params(ViewSpec(96, (0.67, 1.0)), 500, 300, 400)  # SimMIM's view: crop and flip only
    assert (plain[:, [COL['jitter'], COL['gray'], COL['sigma']]] == 0).all() and 0.35 < float(plain[:, COL['flip']].mean()) < 0.65

def test_each_operation_matches_pil(ph):
    "every colour operation and the blur against torchvision's PIL functions, on three photos, in uint8 levels"
    for name in ('coffee', 'astronaut', 'chelsea'):
        im = dict(ph)[name].resize((160, 120))
        x = TF.to_dtype(TF.pil_to_tensor(im), torch.float32, scale=True)[None]
        lv = lambda ours, ref: float((ours[0] * 255 - TF.pil_to_tensor(ref).float()).abs().mean())
        one = lambda v: torch.tensor([v])
        for f in (0.6, 1.4):
            assert lv(adjust_brightness_(x.clone(), one(f)), TF.adjust_brightness(im, f)) < 1
            assert lv(adjust_contrast_(x.clone(), one(f)), TF.adjust_contrast(im, f)) < 1
            assert lv(adjust_saturation_(x.clone(), one(f)), TF.adjust_saturation(im, f)) < 1
        for h in (-0.1, 0.03, 0.1):
            assert lv(adjust_hue_(x.clone(), one(h)), TF.adjust_hue(im, h)) < 1.5
        assert lv(_gray(x).expand(-1, 3, -1, -1), im.convert('L').convert('RGB')) < 0.6
        for s in (0.5, 1.0, 2.0):
            assert lv(gaussian_blur_(x.clone(), one(s)), im.filter(ImageFilter.GaussianBlur(s))) < 1.5, s
    # per-image factors: each row of a batch gets its own
    xs = x.repeat(3, 1, 1, 1)
    out = adjust_brightness_(xs.clone(), torch.tensor([0.6, 1.0, 1.4]))
    assert torch.equal(out[1], x[0]) and not torch.equal(out[0], out[2])

def test_crop_resize_matches_pil_and_handles_mixed_sizes(ph):
    astro, coins = dict(ph)['astronaut'], dict(ph)['coins']  # 512x512 and 384x303: a batch of two sizes
    imgs = [torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in (astro, coins)]
    boxes = torch.tensor([[50., 60., 300., 280.], [284., 203., 100., 100.], [0., 0., 384., 303.]])  # the 2nd touches the corner
    sample, flip = torch.tensor([0, 1, 1]), torch.tensor([False, False, True])
    for mode, tol in (('loop', 0.1), ('roi_align', 3.0)):  # roi_align: area sampling, up to 2.5 levels at a 6x downscale
        out = crop_resize(imgs, sample, boxes, flip, 64, mode) * 255
        alone = crop_resize([imgs[1]], torch.tensor([0]), boxes[1:2], flip[1:2], 64, mode) * 255
        assert torch.allclose(out[1], alone[0], atol=1e-3), mode  # the bigger image beside it changes nothing at the edge
        for k, (b, (x0, y0, w, h)) in enumerate(zip(sample.tolist(), boxes.long().tolist())):
            ref = (astro, coins)[b].crop((x0, y0, x0 + w, y0 + h)).resize((64, 64), Image.BILINEAR)
            if flip[k]: ref = ref.transpose(Image.FLIP_LEFT_RIGHT)
            assert float((out[k] - TF.pil_to_tensor(ref).float()).abs().mean()) < tol, (mode, k)

def _both(ph, method, views, n, seed=1, size=None):
    "The two paths' batch dicts for n samples of the bundled photos (resized to `size` on the short side)"
    ims = [im if size is None else im.resize((round(im.size[0] * size / min(im.size)), round(im.size[1] * size / min(im.size))))
           for _, im in ph]
    data = [(ims[i % len(ims)], i % len(ims)) for i in range(n)]
    tf, col, _ = view_pipeline(method, {**views, 'device': 'cpu'})
    a = col([Views(data, tf, seed)[i] for i in range(n)])
    tf, col, aug = view_pipeline(method, {**views, 'device': 'auto'}, 'cpu')
    return a, aug(col([Views(data, tf, seed)[i] for i in range(n)]))

def _welch(a, b):
    "z of the difference of two samples' means"
    return float((a.mean() - b.mean()).abs() / (a.var() / len(a) + b.var() / len(b)).sqrt())

def test_output_mean_and_std_per_channel_match(ph):
    "MSN's views on the bundled photos: per view and channel, mean and std have the same distribution on both paths"
    pil, bat = _both(ph, 'msn', dict(rand_size=64, focal_size=32, focal_views=6), 14 * 12, size=128)
    for k, (a, b) in enumerate(zip([pil['target'], *pil['anchors']], [bat['target'], *bat['anchors']])):
        for c in range(3):
            for stat in (lambda v: v.mean((1, 2)), lambda v: v.std((1, 2))):
                z = _welch(stat(a[:, c]), stat(b[:, c]))
                assert z < 4.5, (k, c, z)
        ps, bs = [torch.cat(s) for s in (channel_stats(dict(image=a))['image'], channel_stats(dict(image=b))['image'])]
        assert (ps - bs).abs().max() < 0.12, (k, ps, bs)

def test_simmim_output_matches(ph):
    pil, bat = _both(ph, 'simmim', dict(img_size=64, mask_patch_size=16, model_patch_size=8, mask_ratio=0.6), 14 * 6, size=96)
    assert list(bat) == ['image', 'mask', 'label'] and bat['mask'].dtype == pil['mask'].dtype == torch.int64
    assert bat['mask'].shape == pil['mask'].shape and (bat['mask'].float().mean((1, 2)) == pil['mask'].float().mean((1, 2))).all()
    for c in range(3):
        assert _welch(pil['image'][:, c].mean((1, 2)), bat['image'][:, c].mean((1, 2))) < 4.5
        assert _welch(pil['image'][:, c].std((1, 2)), bat['image'][:, c].std((1, 2))) < 4.5

@pytest.mark.parametrize('views', [dict(), dict(focal_views=0), dict(rand_views=0), dict(rand_views=2, focal_views=3),
                                   dict(rand_size=32, focal_size=32, focal_views=2)])
def test_batch_dict_is_the_per_image_one(ph, views):
    "keys, order, shapes, dtypes, labels: what collate_views gives, for every view layout (equal sizes merge groups)"
    views = dict(dict(rand_size=48, focal_size=24), **views)
    pil, bat = _both(ph, 'msn', views, 3)
    assert list(bat) == list(pil) == ['target', 'anchors', 'label']
    assert [t.shape for t in [bat['target'], *bat['anchors']]] == [t.shape for t in [pil['target'], *pil['anchors']]]
    assert all(t.dtype == torch.float32 for t in [bat['target'], *bat['anchors']]) and torch.equal(bat['label'], pil['label'])
    for kind, v in (('toy', dict(img_size=32)),):
        p, b = _both(ph, kind, v, 2)
        assert list(b) == list(p) == ['image', 'label'] and b['image'].shape == p['image'].shape

def test_view_major_order_and_determinism(ph):
    "anchors are view-major; a sample's views depend on (seed, epoch, index) only, not its batch or the worker count"
    spec = msn_view_specs(MSNViews(48, 24, 1, 3))
    data = [(im, k) for k, (_, im) in enumerate(ph[:6])]
    vw = Views(data, DecodedViews(spec), seed=3)
    bv = BatchViews(spec)
    full = bv(collate_decoded([vw[i] for i in range(6)]))
    part = bv(collate_decoded([vw[i] for i in (4, 2)]))
    # bitwise: a view must not depend on its batch, or one process and two (each with half the batch) drift apart
    assert torch.equal(full['target'][4], part['target'][0])
    assert torch.equal(full['anchors'][1][6 * 2 + 2], part['anchors'][1][2 * 2 + 1])  # view 2 of sample 2
    assert torch.equal(bv(collate_decoded([vw[i] for i in range(6)]))['anchors'][1], full['anchors'][1])
    loader = lambda w: torch.utils.data.DataLoader(vw, batch_size=3, num_workers=w, collate_fn=collate_decoded)
    b0, b2 = next(iter(loader(0))), next(iter(loader(2)))
    assert all(torch.equal(a, b) for k in b0 for a, b in (zip(b0[k], b2[k]) if k == 'images' else [(b0[k], b2[k])]))
    vw.set_epoch(1)
    assert not torch.equal(collate_decoded([vw[0]])['view_params'], collate_decoded([Views(data, DecodedViews(spec), seed=3)[0]])['view_params'])
    g = torch.get_rng_state()
    bv(b0)
    assert torch.equal(g, torch.get_rng_state())  # the device side draws nothing

def test_strategies_and_crops_agree(ph):
    spec = msn_view_specs(MSNViews(48, 24, 1, 4))
    raw = collate_decoded([Views([(im, k) for k, (_, im) in enumerate(ph[:4])], DecodedViews(spec), seed=0)[i] for i in range(4)])
    runs, masked = BatchViews(spec, strategy='runs')(raw), BatchViews(spec, strategy='masked')(raw)
    roi = BatchViews(spec, crop='roi_align')(raw)
    for a, b, c in zip([runs['target'], *runs['anchors']], [masked['target'], *masked['anchors']], [roi['target'], *roi['anchors']]):
        assert (a - b).abs().max() < 0.05  # float rounding and the blur's truncation (normalized units)
        assert (a - b).abs().mean() < 1e-3
        assert (a - c).abs().mean() < 0.05  # area sampling vs the antialiased filter

def test_bad_input_fails_early(ph):
    with pytest.raises(ValueError, match="method must be one of"): view_pipeline('mae', {})
    with pytest.raises(ValueError, match="views.device must be one of 'cpu', 'auto'"): view_pipeline('msn', dict(device='gpu'))
    with pytest.raises(ValueError, match="missing mask_ratio"):
        view_pipeline('simmim', dict(img_size=64, mask_patch_size=16, model_patch_size=8))
    with pytest.raises(ValueError, match="got \\['colour'\\]"):
        view_pipeline('simmim', dict(img_size=64, mask_patch_size=16, model_patch_size=8, mask_ratio=0.6, colour=True))
    with pytest.raises(ValueError, match='mask_patch_size'):
        view_pipeline('simmim', dict(img_size=64, mask_patch_size=5, model_patch_size=8, mask_ratio=0.6))
    with pytest.raises(ValueError, match="rand_scale"): view_pipeline('msn', dict(rand_scale=(0.5, 0.2)))
    with pytest.raises(ValueError, match="scale must be"): DecodedViews([ViewSpec(32, (0.5, 0.1))])
    with pytest.raises(TypeError, match="collate_decoded"): BatchViews([ViewSpec(32)], 'image')(dict(image=torch.zeros(1)))
    spec = [ViewSpec(32)] * 2
    raw = collate_decoded([(DecodedViews(spec)(ph[0][1]), 0)])
    with pytest.raises(ValueError, match="make 3 views per image"): BatchViews([ViewSpec(32)] * 3)(raw)
    with pytest.raises(ValueError, match="HxWx3 uint8"): image_list([torch.zeros(4, 4, 3, dtype=torch.uint8), torch.zeros(4, 4)])

def test_bench_views_script_and_table(capsys, monkeypatch):
    "bench/bench_views.py runs at toy size, prints the fields bench/run.py tables, and the table comes out"
    from pathlib import Path
    import json, sys
    bench = Path(__file__).resolve().parents[1] / 'bench'
    if not bench.is_dir(): pytest.skip('bench/ is not in this checkout')
    monkeypatch.syspath_prepend(str(bench))
    import bench_views, run
    monkeypatch.setattr(sys, 'argv', ['bench_views', '--quick', '--repeats', '1', '--warmup', '0'])
    capsys.readouterr()
    bench_views.main()
    d = json.loads(capsys.readouterr().out)
    assert d['threads'] == 1 and set(d['results']) == {'msn', 'simmim'}
    for m, r in d['results'].items():
        assert {'pil', 'batched', 'batched_worker'} <= set(r) and r['ratio_batched_over_pil']['median'] > 0
        assert r['batched']['samples_per_s_per_core'] > 0 and r['ratio_batched_files_over_pil_files']['median'] > 0
    model = {'results': {'vit_small': {'masklab': {'images_per_s': {'median': 2.0}}}}}
    md = '\n'.join(run.views_summary({'views': d, 'msn_small': model}))
    assert '| msn | batched |' in md and '| simmim | pil |' in md and '| simmim | pil_files |' in md and '| msn vit_small | batched |' in md

def test_hue_equals_torchvisions_float_hue():
    "the branch-free hue is the HSV round trip: against torchvision's tensor adjust_hue, ties, grays and wraps included"
    torch.manual_seed(0)
    x = torch.rand(6, 3, 40, 40)
    x[:, 1, :8] = x[:, 0, :8]; x[:, 2, 8:16] = x[:, 1, 8:16]; x[:, 0, 16:24] = x[:, 2, 16:24]  # two channels tie
    x[:, :, 24:28] = x[:, :1, 24:28]; x[:, :, 28:32] = (x[:, :, 28:32] > 0.5).float()          # grays, saturated colours
    for s in (-0.5, -0.3, -0.1, -0.02, 0.0, 0.05, 0.1, 0.2, 0.5):
        ref = torch.stack([TF.adjust_hue(v, s) for v in x])
        assert (adjust_hue_(x.clone(), torch.full((6,), s)) - ref).abs().max() < 1e-5, s
    f = torch.linspace(-0.1, 0.1, 6)  # each image its own shift
    ref = torch.stack([TF.adjust_hue(v, float(s)) for v, s in zip(x, f)])
    assert (adjust_hue_(x.clone(), f) - ref).abs().max() < 1e-5

def _numpy_params(specs, H, W, jitter=0.4, p_jitter=0.8, p_gray=0.2, p_blur=0.5, blur=(0.1, 2.0)):
    "draw_view_params as it was written before 2026-12-02 (vectorised numpy): the reference for the plain-Python one"
    V, u = len(specs), torch.rand(len(specs), 53, dtype=torch.float64).numpy()
    scale, ratio = np.array([s.scale for s in specs], float), np.array([s.ratio for s in specs], float)
    c, lr = u[:, :40].reshape(V, 10, 4), np.log(ratio)
    target = H * W * (scale[:, :1] + c[..., 0] * (scale[:, 1:] - scale[:, :1]))
    aspect = np.exp(lr[:, :1] + c[..., 1] * (lr[:, 1:] - lr[:, :1]))
    w, h = np.round(np.sqrt(target * aspect)), np.round(np.sqrt(target / aspect))
    ok = (w > 0) & (w <= W) & (h > 0) & (h <= H)
    r, first, found = np.arange(V), ok.argmax(1), ok.any(1)
    w, h = w[r, first], h[r, first]
    y0, x0 = np.floor(c[r, first, 2] * (H - h + 1)), np.floor(c[r, first, 3] * (W - w + 1))
    lo, hi = ratio.min(1), ratio.max(1)
    fw = np.where(W / H > hi, np.round(H * hi), W); fh = np.where(W / H < lo, np.round(W / lo), H)
    out = np.zeros((V, 16))
    out[:, :4] = np.stack([np.where(found, x0, (W - fw) // 2), np.where(found, y0, (H - fh) // 2),
                           np.where(found, w, fw), np.where(found, h, fh)], 1)
    colour, jl = np.array([s.colour for s in specs]), max(0.0, 1 - jitter)
    out[:, 4] = u[:, 40] < np.array([s.hflip for s in specs])
    out[:, 5] = colour & (u[:, 41] < p_jitter)
    out[:, 6:9] = jl + u[:, 42:45] * (1 + jitter - jl)
    out[:, 9] = (2 * u[:, 45] - 1) * jitter / 4
    out[:, 10:14] = np.argsort(u[:, 46:50], 1)
    out[:, 14] = colour & (u[:, 50] < p_gray)
    out[:, 15] = np.where(colour & (u[:, 51] < p_blur), blur[0] + u[:, 52] * (blur[1] - blur[0]), 0)
    return torch.from_numpy(out).float()

def test_params_are_the_vectorised_rule_bitwise():
    "the plain-Python draw_view_params gives the very numbers of the numpy formulation, centre-crop fallback included"
    specs = [[ViewSpec(224, (0.3, 1.0), colour=True)] * 2 + [ViewSpec(96, (0.05, 0.3), colour=True)] * 10,
             [ViewSpec(224, (0.67, 1.0))], [ViewSpec(32, (0.9, 1.0), (3.0, 4.0), 0.3, True), ViewSpec(16, (0.01, 1.0), (0.2, 0.3))]]
    for sp, (H, W), seed in itertools.product(specs, [(512, 512), (427, 640), (1411, 1411), (30, 400), (400, 30), (8, 8)], range(40)):
        sp = [ViewSpec(s.size, s.scale, s.ratio, s.hflip, s.colour) for s in sp]
        torch.manual_seed(seed); ref = _numpy_params(sp, H, W)
        torch.manual_seed(seed); ours = draw_view_params(sp, H, W)
        assert ours.dtype == torch.float32 and torch.equal(ours, ref), (H, W, seed)

def test_arrays_are_viewed_not_copied_and_give_the_same_views(ph):
    "an ImageDataset of uint8 arrays: the worker views them (no PIL round trip, no copy), and the views are bitwise those of PIL input"
    from masklab.data import ImageDataset
    from masklab.masking import random_unit_masks
    rgb = [np.array(im) for _, im in ph[:3]]
    gray, rgba = rgb[0][..., 1].copy(), np.concatenate([rgb[1], np.full(rgb[1].shape[:2] + (1,), 7, np.uint8)], -1)
    arrays = rgb + [gray, rgba]
    ds = ImageDataset(arrays, list(range(5)), [str(k) for k in range(5)])
    pil = [(ds[i][0], i) for i in range(5)]  # the PIL images the per-image path sees
    for method, views in (('msn', dict(rand_size=48, focal_size=24, focal_views=3)),
                          ('simmim', dict(img_size=64, mask_patch_size=16, model_patch_size=8, mask_ratio=0.6))):
        tf, col, aug = view_pipeline(method, views, 'cpu')
        va, vp = Views(ds, tf, seed=2), Views(pil, tf, seed=2)
        sa = [va[i] for i in range(5)]
        assert all(s[0][0].data_ptr() == a.__array_interface__['data'][0] for s, a in zip(sa, arrays))  # views of the arrays
        a, p = aug(col(sa)), aug(col([vp[i] for i in range(5)]))
        for k in a:
            for x, y in (zip(a[k], p[k]) if k == 'anchors' else [(a[k], p[k])]): assert torch.equal(x, y), (method, k)
        if method == 'simmim':  # the worker's mask is `random_unit_masks`' own, drawn after the view's numbers
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0); draw_view_params(tf.specs, 10, 10); ref = random_unit_masks(1, 64, 16, 8, 0.6)[0]
                torch.manual_seed(0); got = tf(rgb[0])[2]
            assert torch.equal(got, ref) and got.dtype == ref.dtype
    loader = lambda w: torch.utils.data.DataLoader(va, batch_size=5, num_workers=w, collate_fn=col)
    b0, b2 = next(iter(loader(0))), next(iter(loader(2)))
    assert all(torch.equal(x, y) for x, y in zip(b0['images'], b2['images'])) and torch.equal(b0['mask'], b2['mask'])

def test_folders_decode_without_pil_and_give_the_same_views(ph, tmp_path):
    "an ImageFolderDataset of JPEG and PNG files: the worker gets torchvision's decode (a uint8 tensor), and the views are bitwise those of the PIL images"
    from masklab.data import ImageFolderDataset
    for i, (_, im) in enumerate(ph[:4]):
        im.resize((96, 72)).convert('L' if i == 3 else 'RGB').save(tmp_path/f'{i}.{"png" if i % 2 else "jpg"}', quality=90)
    ds = ImageFolderDataset(tmp_path)
    pil = [ds[i] for i in range(4)]
    for method, views in (('msn', dict(rand_size=48, focal_size=24, focal_views=3)),
                          ('simmim', dict(img_size=64, mask_patch_size=16, model_patch_size=8, mask_ratio=0.6))):
        tf, col, aug = view_pipeline(method, views, 'cpu')
        vf, vp = Views(ds, tf, seed=3), Views(pil, tf, seed=3)
        sf = [vf[i] for i in range(4)]
        assert all(isinstance(s[0][0], torch.Tensor) and s[0][0].dtype == torch.uint8 for s in sf)
        a, p = aug(col(sf)), aug(col([vp[i] for i in range(4)]))
        for k in a:
            for x, y in (zip(a[k], p[k]) if k == 'anchors' else [(a[k], p[k])]): assert torch.equal(x, y), (method, k)
    b2 = next(iter(torch.utils.data.DataLoader(vf, batch_size=4, num_workers=2, collate_fn=col)))
    assert all(torch.equal(x, y) for x, y in zip(col(sf)['images'], b2['images']))

def test_scratch_is_reused_and_not_pickled(ph):
    "BatchViews keeps its CPU buffer between batches of any size (same views as a fresh one), and a pickled copy leaves it behind"
    import pickle
    spec = msn_view_specs(MSNViews(48, 24, 1, 3))
    vw = Views([(im, k) for k, (_, im) in enumerate(ph[:5])], DecodedViews(spec), seed=4)
    bv = BatchViews(spec)
    big, small = collate_decoded([vw[i] for i in range(5)]), collate_decoded([vw[i] for i in (3, 1)])
    first = bv(big)
    buf = bv._scratch
    assert buf is not None and buf.numel() >= 5 * 3 * 3 * 24 * 24
    bv(small)
    again, fresh = bv(big), BatchViews(spec)(big)
    assert bv._scratch is buf  # kept, not reallocated
    for a, b, c in zip([first['target'], *first['anchors']], [again['target'], *again['anchors']], [fresh['target'], *fresh['anchors']]):
        assert torch.equal(a, b) and torch.equal(a, c)
    copy = pickle.loads(pickle.dumps(bv))
    assert copy._scratch is None and bv._scratch is buf and len(pickle.dumps(bv)) < 100_000

def test_a_labelled_subset_hands_on_its_arrays(ph):
    "the pre-training half of a held-out split (`LabelledSubset`) passes its dataset's arrays through: the same views bitwise"
    from masklab.data import ImageDataset
    from masklab.train import LabelledSubset
    arrays = [np.array(im)[..., 0].copy() for _, im in ph[:4]]  # gray, as MNIST is stored
    sub = LabelledSubset(ImageDataset(arrays, [0, 1, 2, 3], list('abcd')), [3, 1])
    assert sub.stored(0)[0] is arrays[3] and sub.stored(1)[1] == 1
    tf, col, aug = view_pipeline('msn', dict(rand_size=32, focal_size=16, focal_views=2), 'cpu')
    a = aug(col([Views(sub, tf, seed=1)[i] for i in range(2)]))
    p = aug(col([Views([sub[i] for i in range(2)], tf, seed=1)[i] for i in range(2)]))  # PIL images
    assert all(torch.equal(x, y) for x, y in zip([a['target'], *a['anchors']], [p['target'], *p['anchors']]))
    class Plain:  # a dataset without `stored`: its items as they are
        labels = [0]
        def __getitem__(self, i): return Image.new('RGB', (8, 8)), 0
    assert isinstance(LabelledSubset(Plain(), [0]).stored(0)[0], Image.Image)
