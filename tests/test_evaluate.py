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
    from masklab.evaluate import centre_normalize
    a, b = centre_normalize(x, te_x)
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
])
def test_bad_input(call, exc, words):
    x, y = toy()
    with pytest.raises(exc, match=words): call(x, y)

def test_features_where_the_papers_take_them(runs, crops):
    from masklab.train import load_run
    msn, _ = load_run(runs['msn'])
    f, y = extract_features(runs['msn'], crops, progress=False)
    x = torch.stack([__import__('masklab.evaluate', fromlist=['x']).eval_transform(32)(im) for im, _ in [crops[0], crops[1]]])
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
    groups = layer_decay_groups(Classifier(runs['simmim'], 14), layer_decay=0.5)
    assert sorted({g['lr_scale'] for g in groups}) == [0.125, 0.25, 0.5, 1.0]
    out = tmp_path/'ft.json'
    assert main(['evaluate', '--checkpoint', str(runs['msn']), '--protocol', 'finetune', '--epochs', '0.1',
                 '--batch-size', '8', '--out', str(out), '--no-progress']) == 0
    assert json.loads(out.read_text())['steps'] == 6
    assert main(['evaluate', '--checkpoint', str(runs['msn']), '--protocol', 'finetune', '--recipe', 'beit']) == 2
    with pytest.raises(ValueError, match='unknown fine-tuning setting'): finetune(runs['msn'], crops, crops, mixupp=1.0)
