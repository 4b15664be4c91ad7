"""Evaluation protocols: known answers, features taken where each paper takes them, bad input, `masklab evaluate`."""
import copy, json
import numpy as np
import pytest, torch
from masklab.evaluate import (as_features, as_labels, extract_features, knn_eval, few_shot_eval, few_shot_indices,
                              linear_probe, logreg_accuracy, train_test_split, evaluate, msn_features)
from masklab.data import photo_crops
from masklab.train import default_config, pretrain, build_method
from masklab.cli import main, PRESETS

def toy(n_per=30, n_cls=4, dim=8, sep=8., seed=0):
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(n_cls, dim, generator=g) * sep
    y = torch.arange(n_cls).repeat_interleave(n_per)
    return c[y] + torch.randn(len(y), dim, generator=g), y

@pytest.fixture(scope='module')
def crops(): return photo_crops(n_per_photo=6, size=32, seed=1)

@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    out = {}
    for m in ('simmim', 'msn', 'toy'):
        out[m] = tmp_path_factory.mktemp(m)/'run'
        pretrain({**default_config(m), **copy.deepcopy(PRESETS['tiny'][m]), 'max_steps': 2}, out[m], progress=False)
    return out

def test_known_answers():
    x, y = toy()
    shuffled = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(3))]
    tr, te = train_test_split(y)
    assert knn_eval(x[tr], y[tr], x[te], y[te], k=5) == 1.0
    assert few_shot_eval(x, y, shots=(1,))[1]['mean'] == 1.0
    assert linear_probe(x[tr], y[tr], x[te], y[te], epochs=30)['test'] == 1.0
    assert abs(knn_eval(x, shuffled, k=10) - 0.25) < 0.15
    assert abs(few_shot_eval(x, shuffled, shots=(5,))[5]['mean'] - 0.25) < 0.2

def test_logreg_span_trick_is_exact():
    x, y = toy(n_per=3, dim=50, sep=0.5)
    te_x, te_y = toy(n_per=10, dim=50, sep=0.5, seed=0)
    from sklearn.linear_model import LogisticRegression
    from masklab.evaluate import cyanure_preprocess
    a, b = cyanure_preprocess(x), cyanure_preprocess(te_x)
    full = LogisticRegression(C=400, fit_intercept=False, max_iter=5000, tol=1e-10).fit(a.double().numpy(), y.numpy())
    assert logreg_accuracy(x, y, te_x, te_y) == (full.predict(b.double().numpy()) == te_y.numpy()).mean()

def test_splits_are_reproducible():
    _, y = toy()
    assert torch.equal(few_shot_indices(y, 2, 1, seed=4), few_shot_indices(y, 2, 1, seed=4))
    assert not torch.equal(few_shot_indices(y, 2, 0), few_shot_indices(y, 2, 1))
    assert torch.equal(train_test_split(y, seed=2)[1], train_test_split(y, seed=2)[1])

@pytest.mark.parametrize('call, exc, words', [
    (lambda x, y: few_shot_eval(x, y, shots=(20,)), ValueError, 'shots=20'),
    (lambda x, y: few_shot_eval(x, torch.zeros_like(y)), ValueError, 'labels holds 1 class'),
    (lambda x, y: knn_eval(x, y.float()), TypeError, 'train_labels must be integer'),
    (lambda x, y: few_shot_eval(x, np.array(['a'] * len(y))), TypeError, 'labels must be integer'),
    (lambda x, y: knn_eval(torch.where(x > 5, float('nan'), x), y), ValueError, 'train_feats holds'),
    (lambda x, y: linear_probe(x, y, x, y, epochs=0), ValueError, 'epochs must be >= 1'),
    (lambda x, y: evaluate(None, None, 'fine-tune', feats=(x, y)), ValueError, 'protocol must be one of'),
    # the checks the lesson keeps in hidden helpers, each still failing early with the argument's name
    (lambda x, y: knn_eval(x, y, x), ValueError, 'give both test_feats and test_labels'),
    (lambda x, y: knn_eval(x, y, x[:, :3], y), ValueError, 'test_feats must have 8 columns like train_feats, got 3'),
    (lambda x, y: logreg_accuracy(x, y, x[:, :3], y), ValueError, 'test_feats must have 8 columns'),
    (lambda x, y: linear_probe(x, y, x[:, :3], y), ValueError, 'test_feats must have 8 columns'),
    (lambda x, y: knn_eval(x, y, k=0), ValueError, 'k must be >= 1'),
    (lambda x, y: knn_eval(x, y, k=len(y)), ValueError, 'k must be <='),
    (lambda x, y: few_shot_eval(x, y, n_splits=0), ValueError, 'n_splits must be >= 1'),
    (lambda x, y: linear_probe(x, y, x, y, lr=-1.0), ValueError, 'lr must be >= 0'),
    (lambda x, y: train_test_split(torch.tensor([0, 0, 1, 2, 2])), ValueError, 'class 1 has 1 image; each class needs >= 2'),
    (lambda x, y: train_test_split(y, test_frac=1.5), ValueError, 'test_frac must be <= 1'),
    (lambda x, y: few_shot_indices(torch.tensor([0, 0, 0, 1, 2]), 2), ValueError, 'shots=2 but class 1 of labels has only 1'),
    (lambda x, y: few_shot_indices(y, 2, split=-1), ValueError, 'split must be >= 0'),
    (lambda x, y: extract_features('pixels', []), ValueError, 'ds is empty'),
    (lambda x, y: extract_features('pixels', [(None, 0)], batch_size=0), ValueError, 'batch_size must be >= 1'),
    (lambda x, y: extract_features('pixels', [(None, 0)], block=1), ValueError, 'block is only for SimMIM features'),
])
def test_bad_input(call, exc, words):
    x, y = toy()
    with pytest.raises(exc, match=words): call(x, y)

def test_features_where_the_papers_take_them(runs, crops):
    from masklab.train import load_run
    msn, _ = load_run(runs['msn'])
    f, y = extract_features(runs['msn'], crops, progress=False)
    x = torch.stack([__import__('masklab.evaluate', fromlist=['x']).eval_transform(32, 'bilinear')(im) for im, _ in [crops[0], crops[1]]])
    with torch.no_grad():
        tokens = msn.target_encoder.backbone.forward_features(x, norm=False)
        torch.testing.assert_close(f[:2], tokens[:, 0], atol=1e-5, rtol=1e-4)
        assert not torch.allclose(f[:2], msn.target_encoder.backbone(x), atol=1e-3)  # that one is after the norm
    fs, _ = extract_features(runs['simmim'], crops, block=1, progress=False)
    fl, _ = extract_features(runs['simmim'], crops, progress=False)
    assert fs.shape == fl.shape and not torch.allclose(fs, fl)
    assert torch.equal(y, torch.as_tensor(crops.labels))
    with pytest.raises(ValueError, match='block must be <= 2'): extract_features(runs['simmim'], crops, block=3)
    with pytest.raises(TypeError, match='model_or_run must be'): extract_features(runs['toy'], crops)

def test_cli_evaluate(runs, tmp_path, capsys):
    out = tmp_path/'r.json'
    assert main(['evaluate', '--checkpoint', str(runs['msn']), '--protocol', 'fewshot', '--data', 'digits',
                 '--shots', '1,2', '--out', str(out), '--no-progress']) == 0
    res = json.loads(out.read_text())
    assert res['protocol'] == 'fewshot' and sorted(res['shots']) == ['1', '2'] and res['dim'] == 64
    assert '1-shot' in capsys.readouterr().out
    assert main(['evaluate', '--checkpoint', str(runs['simmim']), '--protocol', 'knn', '--data', 'digits', '--no-progress']) == 0
    assert main(['evaluate', '--checkpoint', str(runs['toy'])]) == 2
    assert "holds a 'toy' model" in capsys.readouterr().err
    assert main(['evaluate', '--checkpoint', 'pixels', '--protocol', 'finetune']) == 2
    assert main(['evaluate', '--checkpoint', 'pixels', '--k', '0']) == 2
    assert main(['evaluate', '--checkpoint', 'pixels', '--shots', 'one', '--protocol', 'fewshot']) == 2

def test_finetune(runs, crops, tmp_path):
    from masklab.evaluate import finetune, Classifier, layer_decay_groups
    res = finetune(runs['simmim'], crops, crops, 'simmim', epochs=1, batch_size=16, progress=False)
    assert res['steps'] == len(crops) // 16 and 0 <= res['accuracy'] <= 1 and res['layer_decay'] == 0.65
    assert res['train_accuracy'] == res['accuracy']  # tested on its own training images: the same centre crops, the same number
    groups = layer_decay_groups(Classifier(runs['simmim'], 14), layer_decay=0.5)
    assert sorted({g['lr_scale'] for g in groups}) == [0.125, 0.25, 0.5, 1.0]
    out = tmp_path/'ft.json'
    assert main(['evaluate', '--checkpoint', str(runs['msn']), '--protocol', 'finetune', '--epochs', '0.1',
                 '--batch-size', '8', '--out', str(out), '--no-progress']) == 0
    assert json.loads(out.read_text())['steps'] == 5  # int(epochs * steps per epoch), as SimMIM's build_scheduler counts
    assert main(['evaluate', '--checkpoint', str(runs['msn']), '--protocol', 'finetune', '--recipe', 'beit']) == 2
    with pytest.raises(ValueError, match='unknown fine-tuning setting'): finetune(runs['msn'], crops, crops, mixupp=1.0)


def test_finetune_depends_on_its_seed_only(runs, crops):
    "timm's crops, RandAugment and erasing draw from Python's random, mixup from NumPy: finetune seeds them and gives them back"
    import random
    from masklab.evaluate import finetune
    def run(seed=0, noise=0):
        random.seed(noise); np.random.seed(noise); torch.manual_seed(noise)  # whatever ran before in the process
        return finetune(runs['simmim'], crops, crops, 'simmim', epochs=1, batch_size=16, seed=seed, progress=False)
    a, b = run(), run(noise=1)
    assert a['final_loss'] == b['final_loss'] and a['accuracy'] == b['accuracy']  # the same run, bit for bit
    assert run(seed=1)['final_loss'] != a['final_loss']  # the seed does reach it
    random.seed(5); before = random.random(); random.seed(5)
    finetune(runs['simmim'], crops, crops, 'simmim', epochs=1, batch_size=16, progress=False)
    assert random.random() == before  # the caller's stream is where it was


# --- issue 17: the evaluation protocols as the official code runs them ---

def test_fewshot_preprocessing_is_cyanures_row_centring():
    from masklab.evaluate import cyanure_preprocess, logreg_weights
    import torch.nn.functional as F
    g = torch.Generator().manual_seed(0)
    y = torch.arange(4).repeat_interleave(50)
    x = torch.randn(4, 64, generator=g)[y] + 0.5 * torch.randn(len(y), 64, generator=g) + 20 * torch.randn(len(y), 1, generator=g)
    # cyanure: the transposed (D, N) matrix, each column (= sample) centred, then scaled to unit norm
    xt = x.double().numpy().T.copy()
    xt -= xt.mean(0, keepdims=True); xt /= np.linalg.norm(xt, axis=0, keepdims=True)
    np.testing.assert_allclose(cyanure_preprocess(x).numpy(), xt.T, atol=1e-6)
    torch.testing.assert_close(cyanure_preprocess(x + 5.0), cyanure_preprocess(x), atol=1e-5, rtol=0)
    tr, te = train_test_split(y)
    idx = tr[few_shot_indices(y[tr], 1, 0)]
    assert logreg_accuracy(x[idx], y[idx], x[te], y[te]) == 1.0  # the per-sample offsets are gone
    mu = x[idx].mean(0, keepdim=True)  # the old preprocessing: the labelled features' mean
    w, c = logreg_weights(F.normalize(x[idx] - mu, dim=1), y[idx])
    old = float((c[(F.normalize(x[te] - mu, dim=1).double() @ w.T).argmax(1)] == y[te]).double().mean())
    assert old < 0.7

@pytest.mark.parametrize('K, D, N', [(3, 10, 60), (2, 10, 60), (3, 50, 12), (2, 50, 8)])
def test_logreg_minimizes_cyanures_objective(K, D, N):
    from masklab.evaluate import cyanure_preprocess, logreg_weights
    import torch.nn.functional as F
    g = torch.Generator().manual_seed(K * D)
    y = torch.arange(K).repeat_interleave(N // K)
    x = cyanure_preprocess(torch.randn(K, D, generator=g)[y] + torch.randn(len(y), D, generator=g)).double()
    lam = 0.05
    W = torch.zeros(K, D, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W], max_iter=1000, tolerance_grad=1e-12, tolerance_change=1e-15, line_search_fn='strong_wolfe')
    def closure():
        opt.zero_grad(); loss = F.cross_entropy(x @ W.T, y) + lam / len(x) / 2 * W.pow(2).sum(); loss.backward(); return loss
    opt.step(closure)
    w, classes = logreg_weights(x, y, lam=lam, max_iter=10000, tol=1e-12)
    assert classes.tolist() == list(range(K))
    torch.testing.assert_close(w, W.detach(), atol=1e-4, rtol=0)

def test_linear_probe_layernorm_has_affine():
    from masklab.evaluate import LinearProbe
    import torch.nn.functional as F
    p = LinearProbe(16, 3)
    assert {n for n, _ in p.named_parameters()} == {'norm.weight', 'norm.bias', 'fc.weight', 'fc.bias'}
    assert abs(float(p.fc.weight.detach().std()) - 0.01) < 0.004 and not p.fc.bias.any()
    x, y = toy(dim=16)
    tr, te = train_test_split(y)
    probe = linear_probe(x[tr], y[tr], x[te], y[te], epochs=5)['probe']
    assert not torch.allclose(probe.norm.weight, torch.ones(16))
    xs = torch.randn(4, 16)
    with torch.no_grad():
        torch.testing.assert_close(probe(xs), probe.fc(F.normalize(F.layer_norm(xs, (16,), probe.norm.weight, probe.norm.bias), dim=-1)))

def test_eval_transform_is_the_official_one(runs, crops):
    from PIL import Image
    from torchvision import transforms as T
    from masklab.evaluate import eval_transform, eval_resize, IMAGENET_MEAN, IMAGENET_STD
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (300, 400, 3), dtype=np.uint8))
    norm = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    simmim = T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224), T.ToTensor(), norm])
    msn = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), norm])
    torch.testing.assert_close(eval_transform(224, 'bicubic')(img).as_subclass(torch.Tensor), simmim(img), atol=1e-6, rtol=0)
    torch.testing.assert_close(eval_transform(224, 'bilinear')(img).as_subclass(torch.Tensor), msn(img), atol=1e-6, rtol=0)
    assert [eval_resize(s) for s in (224, 192, 32)] == [256, 219, 36]
    from masklab.train import load_run
    model, _ = load_run(runs['msn'])
    f, _ = extract_features(model, crops, progress=False)
    x = torch.stack([T.Compose([T.Resize(36), T.CenterCrop(32), T.ToTensor(), norm])(crops[i][0]) for i in range(2)])
    with torch.no_grad(): torch.testing.assert_close(f[:2], msn_features(model.target_encoder.backbone, x), atol=1e-4, rtol=1e-4)

def test_features_follow_the_model_device():
    from masklab.encoders import create_encoder
    from masklab.evaluate import simmim_features
    x = torch.randn(2, 3, 64, 64)
    assert msn_features(create_encoder('msn_vit_tiny').eval().to('meta'), x).device.type == 'meta'
    assert simmim_features(create_encoder('simmim_vit_tiny').eval().to('meta'), x).device.type == 'meta'

def _simmim_model(encoder):
    cfg = {**default_config('simmim'), **copy.deepcopy(PRESETS['tiny']['simmim'])}
    cfg['model']['encoder'] = encoder
    torch.manual_seed(0)
    return build_method(cfg)[0].eval()

def test_finetune_vit_layers_bias_and_pooling():
    from masklab.evaluate import Classifier, layer_decay_groups, vit_layer_id, simmim_features, expand_rel_pos_bias
    assert vit_layer_id('rel_pos_bias.relative_position_bias_table', 12) == 13
    assert vit_layer_id('blocks.3.attn.qkv.weight', 12) == 4 and vit_layer_id('cls_token', 12) == 0
    m = _simmim_model('simmim_beit_tiny')
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(expand_rel_pos_bias(m.encoder).forward_features(x), m.encoder.forward_features(x), atol=1e-5, rtol=0)
    clf = Classifier(m, 5).eval()
    ids = {n: g['layer'] for g in layer_decay_groups(clf) for n in g['names']}
    wd = {n: g['weight_decay'] for g in layer_decay_groups(clf) for n in g['names']}
    assert ids['blocks.1.attn.relative_position_bias_table'] == 2 and wd['blocks.1.attn.relative_position_bias_table'] == 0.05
    assert not any(n.startswith('rel_pos_bias') for n in ids)
    with torch.no_grad():  # the mean of the last block's patch tokens (no pre-trained final norm), then a fresh fc_norm
        assert isinstance(clf.fc_norm, torch.nn.LayerNorm) and clf.fc_norm.eps == 1e-6
        torch.testing.assert_close(clf(x), clf.head(clf.fc_norm(simmim_features(m.encoder, x))), atol=1e-6, rtol=0)

def test_finetune_swin_layer_ids_and_a_step(crops):
    from masklab.evaluate import Classifier, layer_decay_groups, swin_layer_id, finetune
    from masklab.encoders import create_encoder
    d = (2, 1, 3, 1)
    ids = {n: swin_layer_id(n, d) for n, _ in create_encoder('simmim_swin_tiny', depths=d).named_parameters()}
    expect = {'mask_token': 0, 'patch_embed.norm.weight': 0, 'layers.0.blocks.0.norm1.weight': 1,
              'layers.0.blocks.1.attn.relative_position_bias_table': 2, 'layers.1.downsample.reduction.weight': 2,
              'layers.1.downsample.norm.bias': 2, 'layers.1.blocks.0.mlp.fc1.weight': 3, 'layers.2.downsample.norm.weight': 3,
              'layers.2.blocks.0.attn.qkv.weight': 4, 'layers.2.blocks.2.mlp.fc2.bias': 6, 'layers.3.downsample.reduction.weight': 6,
              'layers.3.blocks.0.norm2.weight': 7, 'norm.weight': 8, 'norm.bias': 8}
    assert {n: ids[n] for n in expect} == expect
    for n, i in ids.items():  # every parameter: the rule stated independently
        p = n.split('.')
        if n == 'mask_token' or p[0] == 'patch_embed': assert i == 0
        elif p[0] == 'layers' and p[2] == 'blocks': assert i == sum(d[:int(p[1])]) + int(p[3]) + 1
        elif p[0] == 'layers': assert i == sum(d[:int(p[1]) - 1]) + d[int(p[1]) - 1]
        else: assert i == sum(d) + 1
    m = _simmim_model('simmim_swin_tiny')
    groups = layer_decay_groups(Classifier(m, 14), 0.05, 0.9)
    wd = {n: g['weight_decay'] for g in groups for n in g['names']}
    assert wd['layers.0.blocks.0.attn.relative_position_bias_table'] == 0.0 and wd['layers.0.blocks.0.attn.qkv.weight'] == 0.05
    before = copy.deepcopy(m.encoder.state_dict())
    res = finetune(m, crops, crops, 'simmim_swin', epochs=1, batch_size=16, progress=False)
    assert res['steps'] == len(crops) // 16 and np.isfinite(res['final_loss']) and res['layer_decay'] == 0.9
    assert all(torch.equal(v, m.encoder.state_dict()[k]) for k, v in before.items())  # the copy trained, not the model
    with pytest.raises(ValueError, match="recipe 'simmim' is for a vit encoder"): finetune(m, crops, crops, 'simmim', epochs=1, batch_size=16)

def test_finetune_schedule_starts_and_ends_at_the_recipes_lr(crops):
    from timm.scheduler import CosineLRScheduler
    from masklab.evaluate import finetune_lr, FINETUNE_RECIPES, finetune
    rec = dict(FINETUNE_RECIPES['simmim'], lr=2e-4, warmup_lr=4e-8, min_lr=4e-8)
    total, warm = 50, 10
    opt = torch.optim.AdamW([dict(params=[torch.nn.Parameter(torch.zeros(1))], lr=rec['lr'] * s) for s in (1.0, 0.5)])
    sched = CosineLRScheduler(opt, t_initial=total, lr_min=4e-8, warmup_lr_init=4e-8, warmup_t=warm, t_in_epochs=False)
    for step in range(total):
        assert [g['lr'] for g in opt.param_groups] == pytest.approx([finetune_lr(step, total, warm, rec, s) for s in (1.0, 0.5)], abs=1e-15)
        sched.step_update(step)
    res = finetune(_simmim_model('simmim_vit_tiny'), crops, crops, 'simmim', epochs=2, batch_size=16, progress=False)
    assert res['first_lr'] == pytest.approx(2.5e-7 * 16 / 512, abs=1e-18) and res['min_lr'] == pytest.approx(2.5e-7 * 16 / 512)
    assert res['last_lr'] > res['min_lr']

def test_finetune_augmentation_is_the_recipes():
    from timm.data.auto_augment import RandAugment
    from timm.data.random_erasing import RandomErasing
    from masklab.evaluate import finetune_transform, FINETUNE_RECIPES
    from PIL import Image
    for name in ('simmim', 'simmim_swin', 'mae'):
        tf = finetune_transform(32, FINETUNE_RECIPES[name])
        ra = [t for t in tf.transforms if isinstance(t, RandAugment)]
        er = [t for t in tf.transforms if isinstance(t, RandomErasing)]
        assert len(ra) == 1 and ra[0].num_layers == 2 and {o.magnitude for o in ra[0].ops} == {9}
        assert {o.magnitude_std for o in ra[0].ops} == {0.5} and 'SolarizeIncreasing' in {o.name for o in ra[0].ops}
        assert len(er) == 1 and er[0].probability == 0.25 and er[0].mode == 'pixel' and er[0].max_count == 1
        img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8))
        torch.manual_seed(0)
        assert all(tf(img).shape == (3, 32, 32) for _ in range(30))

def test_finetune_settings_fail_before_training(runs, crops):
    from masklab.evaluate import finetune
    with pytest.raises(ValueError, match="unknown fine-tuning setting 'mixupp'"): finetune(runs['msn'], crops, crops, mixupp=0.5)
    with pytest.raises(ValueError, match='recipe must be one of'): finetune(runs['msn'], crops, crops, 'beit')
    with pytest.raises(ValueError, match='fewer than batch_size=4096'): finetune(runs['msn'], crops, crops, batch_size=4096)
    with pytest.raises(ValueError, match="recipe 'simmim_swin' is for a swin encoder, this one is a vit"):
        finetune(runs['simmim'], crops, crops, 'simmim_swin', batch_size=8)
    with pytest.raises(ValueError, match='lr must be >= 0'): finetune(runs['msn'], crops, crops, lr=-1.0)

def test_shortened_recipe_keeps_its_warmup_fraction():
    "finetune(epochs=...) keeps the recipe's warm-up share of the run (20 of 100 epochs -> 20%), unless warm-up is set too"
    from masklab.evaluate import _recipe, FINETUNE_RECIPES
    for recipe in ('simmim', 'mae', 'short'):
        base = FINETUNE_RECIPES[recipe]
        cfg, _ = _recipe(recipe, {}, 3, None, None)
        assert abs(cfg['warmup_epochs'] / cfg['epochs'] - base['warmup_epochs'] / base['epochs']) < 1e-12
    cfg, _ = _recipe('short', {'warmup_epochs': 2}, 10, None, None)
    assert cfg['warmup_epochs'] == 2  # an explicit warm-up is kept as given
