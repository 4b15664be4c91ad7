"""The trainer's promises, in-process on a CPU: exact resume, SIGTERM, NaN guard, atomic checkpoints, schedules."""
import os, signal, json
from pathlib import Path
import pytest, torch
from masklab.checkpoints import load_state, save_state
from masklab.trainer import (Trainer, ToyMethod, TrainingError, checkpoints, simmim_lr,
                           msn_lr, msn_weight_decay, msn_momentum, scale_lr, param_groups)
from masklab.data import photo_crops, simmim_transform

@pytest.fixture(scope='module')
def ds(): return photo_crops(n_per_photo=4, size=32)

def make(ds, out=None, steps=12, method=None, **kw):
    torch.manual_seed(0)
    return Trainer(method or ToyMethod(width=4), ds, simmim_transform(32), batch_size=8, max_steps=steps,
                   schedule=dict(name='cosine', lr=3e-3, warmup_epochs=0.2, min_lr=1e-4, weight_decay=0.05),
                   optim=dict(clip_grad=5.0), out=out, log_every=1, save_every=4, device='cpu', progress=False, **kw)

def weights(tr): return {k: v.clone() for k, v in tr.module.state_dict().items()}

def same(a, b):
    assert a.keys() == b.keys()
    for k in a: assert torch.equal(a[k], b[k]), k

def test_resume_is_exact(ds, tmp_path):
    full = make(ds); full.fit()
    a = make(ds, tmp_path); a.fit(until=5)
    b = make(ds, tmp_path); b.fit(resume=True)
    same(weights(full), weights(b))
    steps = [json.loads(l)['step'] for l in (tmp_path/'metrics.jsonl').read_text().splitlines()]
    assert steps == list(range(1, 13))

class _Term(ToyMethod):
    "Sends itself SIGTERM during step 6"
    def forward(self, batch):
        if self.step == 6: os.kill(os.getpid(), signal.SIGTERM)
        return super().forward(batch)

def test_sigterm_saves_and_resumes(ds, tmp_path):
    full = make(ds); full.fit()
    torch.manual_seed(0)
    t = make(ds, tmp_path, method=_Term(width=4))
    s = t.fit()
    assert s['stopped'] == 'SIGTERM' and s['steps'] == 7
    assert checkpoints(tmp_path/'checkpoints')[-1].name == 'step-00000007.safetensors'
    assert signal.getsignal(signal.SIGTERM) is not None
    b = make(ds, tmp_path); b.fit(resume=True)
    same(weights(full), weights(b))

def test_nan_stops_and_keeps_checkpoint(ds, tmp_path):
    t = make(ds, tmp_path, steps=12); t.module.nan_at_step = 6
    with pytest.raises(TrainingError, match='at step 6'): t.fit()
    last = checkpoints(tmp_path/'checkpoints')[-1]
    assert last.name == 'step-00000004.safetensors'
    before = last.read_bytes()
    t2 = make(ds, tmp_path, steps=12); t2.module.nan_at_step = 6
    with pytest.raises(TrainingError): t2.fit(resume=True)
    assert last.read_bytes() == before
    tensors, meta = load_state(last)
    assert meta['step'] == 4 and all(torch.isfinite(v).all() for v in tensors.values() if v.is_floating_point())

def test_failed_write_leaves_old_checkpoint(tmp_path, monkeypatch):
    p = tmp_path/'ck.safetensors'
    save_state(p, {'w': torch.ones(3)}, dict(step=1))
    good = p.read_bytes()
    def boom(*a, **k): raise OSError('disk full')
    monkeypatch.setattr(os, 'replace', boom)
    with pytest.raises(OSError): save_state(p, {'w': torch.zeros(3)}, dict(step=2))
    assert p.read_bytes() == good and [q.name for q in tmp_path.iterdir()] == ['ck.safetensors']

def test_checkpoint_is_not_pickle(ds, tmp_path):
    t = make(ds, tmp_path, steps=4); t.fit()
    ck = checkpoints(tmp_path/'checkpoints')[-1]
    assert ck.read_bytes()[:1] != b'\x80'  # not a pickle stream
    tensors, meta = load_state(ck)
    assert 'model.target.1.running_mean' in tensors and meta['format'].startswith('masklab-train-state')

def test_bad_arguments(ds):
    with pytest.raises(ValueError, match='larger than the dataset'):
        Trainer(ToyMethod(), ds, batch_size=len(ds) + 1, max_steps=1, device='cpu')
    with pytest.raises(ValueError, match='split evenly'): Trainer(ToyMethod(), ds, batch_size=9, accum_steps=2, max_steps=1)
    with pytest.raises(TypeError): Trainer(ToyMethod(), ds, batch_size=8.5, max_steps=1)
    with pytest.raises(ValueError, match='nothing to resume'): make(ds, Path('/tmp/masklab-none-xyz')).fit(resume=True)

def test_accumulation_matches_bigger_batch_without_batchnorm(ds):
    class NoBN(ToyMethod):
        def __init__(self):
            super().__init__(width=4)
            for i in (1, 4): self.encoder[i] = torch.nn.Identity()
            self.target = __import__('copy').deepcopy(self.encoder).requires_grad_(False)
    torch.manual_seed(0); a = make(ds, method=NoBN()); a.fit()
    torch.manual_seed(0); b = make(ds, method=NoBN(), accum_steps=2); b.fit()
    for k, v in weights(a).items(): torch.testing.assert_close(v, weights(b)[k], atol=1e-5, rtol=1e-4)

def test_schedules_against_official_forms():
    from timm.scheduler import CosineLRScheduler
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=8e-4)
    ref = CosineLRScheduler(opt, t_initial=300, lr_min=4e-5, warmup_lr_init=4e-6, warmup_t=30, cycle_limit=1,
                            t_in_epochs=False)
    for t in range(300): assert abs(simmim_lr(t, 300, 8e-4, 30, 4e-6, 4e-5) - ref._get_lr(t)[0]) < 1e-12
    assert scale_lr(2e-4, 2048) == pytest.approx(8e-4)
    n = 1000
    assert msn_lr(n - 1, n, 1e-3, 19, 2e-4, 1e-6) == pytest.approx(1e-6 + (1e-3 - 1e-6) * 0.5 * (1 + __import__('math').cos(
        __import__('math').pi * (n - 19) / (1250 - 19))))
    assert msn_weight_decay(-1, n) == pytest.approx(0.04) and msn_weight_decay(1249, n) == pytest.approx(0.4)
    assert msn_momentum(0, n) == 0.996 and msn_momentum(n - 1, n) < 1.0

def test_param_groups_official_rules():
    from masklab.encoders import create_encoder
    enc = create_encoder('simmim_vit_tiny')
    g = {n: grp['weight_decay'] for grp in param_groups(enc, 0.05) for n in grp['names']}
    assert g['pos_embed'] == g['cls_token'] == g['mask_token'] == g['blocks.0.norm1.weight'] == 0.0
    assert g['blocks.0.attn.qkv.weight'] == 0.05 and g['blocks.0.attn.qkv.bias'] == 0.0
    g = {n: grp['weight_decay'] for grp in param_groups(enc, 0.04, keywords=('prototypes', 'bn'), use_model_list=False)
         for n in grp['names']}
    assert g['pos_embed'] == 0.04 and g['blocks.0.norm1.weight'] == 0.0  # MSN decays its 3-D position embedding

def test_compile_flag_keeps_the_run(tmp_path, monkeypatch, capsys):
    """`masklab pretrain --compile` (inductor on the transformer blocks): the same losses as the eager run, the same
    parameter names in model.safetensors, and `compile` stored in the config"""
    from safetensors.torch import load_file
    from masklab.cli import main
    monkeypatch.chdir(tmp_path)
    base = ['pretrain', '--method', 'simmim', '--preset', 'tiny', '--max-steps', '3', '--no-progress', '--save-every', '2']
    runs = {}
    for name, extra in (('eager', []), ('compiled', ['--compile'])):
        assert main(base + ['--out', name] + extra) == 0
        capsys.readouterr()
        runs[name] = [json.loads(l)['loss'] for l in (tmp_path/name/'metrics.jsonl').read_text().splitlines()]
    assert runs['compiled'] == pytest.approx(runs['eager'], rel=1e-4, abs=1e-5), runs
    assert json.loads((tmp_path/'compiled'/'config.json').read_text())['compile'] is True
    assert load_file(tmp_path/'compiled'/'model.safetensors').keys() == load_file(tmp_path/'eager'/'model.safetensors').keys()

def test_compile_on_cpu_without_a_compiler_is_refused(ds, monkeypatch):
    "Inductor on a CPU with no C++ compiler: a ValueError before any work, not an error inside the first step"
    import torch._inductor.cpp_builder as cb
    def missing(): raise RuntimeError('no working C++ compiler found')
    monkeypatch.setattr(cb, 'get_cpp_compiler', missing)
    with pytest.raises(ValueError, match='compile=True on a CPU needs a C\\+\\+ compiler'):
        make(ds, compile=True)
    from masklab.trainer import check_cpu_compiler
    check_cpu_compiler('aot_eager', 'cpu')  # other backends build nothing
    check_cpu_compiler('inductor', 'meta')  # and only CPU kernels need the compiler

def test_fp16_skip_of_a_nonfinite_step_backs_off_the_scale(ds):
    "The fp16 skip path used to call scaler.update() with no inf check recorded: GradScaler asserts"
    tr = make(ds, steps=6, method=ToyMethod(width=4, nan_at_step=2), skip_nonfinite=3)
    tr.scaler = torch.amp.GradScaler('cpu', init_scale=1024.0)  # what precision='fp16' builds on CUDA
    it = iter(tr._loader(0))
    recs = [tr.train_step(it) for _ in range(3)]
    assert 'skipped' in recs[2] and 'skipped' not in recs[1]
    assert tr.scaler.get_scale() == 512.0  # backed off once, as an overflow would
    assert tr.nonfinite_skipped == 1

def test_ema_fraction_scales_the_start_momentum():
    from masklab.train import Schedule, ema_start_for
    assert ema_start_for(100, 0.1) == pytest.approx(0.9)
    s = Schedule(dict(name='msn', ema=[0.996, 1.0], ema_fraction=0.1), 10, 100)
    assert s(0)['momentum'] == pytest.approx(0.9)
    assert Schedule(dict(name='msn', ema=[0.996, 1.0]), 10, 100)(0)['momentum'] == 0.996  # paper presets: untouched
    assert Schedule(dict(name='msn', ema=[0.996, 1.0], ema_fraction=0.1), 10, 10**6)(0)['momentum'] == 0.996  # long runs too

def test_a_failing_figure_keeps_the_run_and_its_summary(tmp_path, monkeypatch):
    "Figures come last and their failure is recorded: model.safetensors, the evaluation and summary.json survive"
    from masklab.train import pretrain, default_config
    def boom(self, ds): raise RuntimeError("Expected all tensors to be on the same device")
    monkeypatch.setattr(ToyMethod, 'run_figures', boom, raising=False)
    cfg = {**default_config('toy'), 'max_steps': 3, 'batch_size': 16, 'log_every': 1, 'device': 'cpu'}
    s = pretrain(cfg, out=tmp_path/'run', progress=False)
    assert 'same device' in s['figure_errors']['method']
    saved = json.loads((tmp_path/'run'/'summary.json').read_text())
    assert saved['figure_errors'] == s['figure_errors'] and 0 <= saved['knn']['accuracy'] <= 1
    assert (tmp_path/'run'/'model.safetensors').exists() and (tmp_path/'run'/'figures'/'loss.png').exists()

def test_run_evaluation_holds_out_and_compares(tmp_path):
    "eval.heldout keeps images out of pre-training; the summary has pretrained / random_init / pixels side by side"
    from masklab.train import pretrain, default_config, heldout_split, LabelledSubset
    from masklab.data import get_dataset
    digits = get_dataset('digits')
    tr_idx, te_idx = heldout_split(digits, dict(heldout=0.2))
    assert len(set(tr_idx.tolist()) & set(te_idx.tolist())) == 0 and abs(len(te_idx) / len(digits) - 0.2) < 0.01
    assert LabelledSubset(digits, tr_idx).labels == [digits.labels[i] for i in tr_idx.tolist()]
    cfg = {**default_config('toy'), 'data': 'digits', 'max_steps': 2, 'batch_size': 16, 'device': 'cpu', 'img_size': 16,
           'eval': dict(knn=True, k=5, heldout=0.2, fewshot=[1, 2], n_splits=2)}
    s = pretrain(cfg, out=tmp_path/'run', progress=False)
    assert set(s['eval']) == {'pretrained', 'random_init', 'pixels'}
    for r in s['eval'].values():
        assert 0 <= r['knn'] <= 1 and len(r['fewshot']['2']['accs']) == 2
    assert s['eval']['pixels']['knn'] > 0.8  # 8x8 digits: raw pixels already separate them
    with pytest.raises(ValueError, match='eval.heldout'):
        pretrain({**cfg, 'eval': dict(heldout=1.5)}, out=tmp_path/'bad', progress=False)

def test_few_label_finetune_uses_a_fraction_of_the_pretraining_labels():
    "eval.finetune: fine-tune on a stratified fraction of the pre-training split's labels, test on the held-out part"
    from masklab.train import few_label_finetune, heldout_split
    from masklab.trainer import build_method, default_config
    from masklab.data import get_dataset
    ds = get_dataset('digits')
    split = heldout_split(ds, dict(heldout=0.2))
    cfg = {**default_config('simmim'), 'img_size': 16, 'device': 'cpu',
           'model': dict(encoder='simmim_vit_tiny', encoder_kwargs=dict(patch_size=4), head='linear', mask_patch_size=8, mask_ratio=0.6)}
    r = few_label_finetune(build_method(cfg)[0], ds, split, dict(fractions=[0.1], epochs=1, recipe='simmim'), 16)
    assert abs(r['0.1']['labels'] - 0.1 * len(split[0])) <= 10 and 0 <= r['0.1']['accuracy'] <= 1
    assert 0 <= r['0.1']['train_accuracy'] <= 1 and r['0.1']['final_loss'] > 0  # under- or over-fitting, kept in the summary

def _digits_split_and_net():
    "scikit-learn's digits with a held-out split, and a one-block SimMIM ViT at its random init"
    from masklab.train import heldout_split
    from masklab.trainer import build_method, default_config
    from masklab.data import get_dataset
    ds = get_dataset('digits')
    cfg = {**default_config('simmim'), 'img_size': 16, 'device': 'cpu',
           'model': dict(encoder='simmim_vit_tiny', encoder_kwargs=dict(patch_size=4, embed_dim=32, depth=1, num_heads=2),
                         head='linear', mask_patch_size=8, mask_ratio=0.6)}
    return ds, heldout_split(ds, dict(heldout=0.2)), build_method(cfg)[0]

def test_few_label_finetune_steps_are_the_same_at_every_fraction():
    "eval.finetune.steps: each fraction fine-tunes for the same number of optimizer steps (1% of labels is not a handful)"
    from masklab.train import few_label_finetune, check_eval_config
    ds, split, net = _digits_split_and_net()
    r = few_label_finetune(net, ds, split, dict(fractions=[0.05, 0.2], steps=4), 16)
    assert r['0.05']['steps'] == r['0.2']['steps'] == 4 and r['0.05']['labels'] < r['0.2']['labels']
    with pytest.raises(ValueError, match="eval.finetune has an unknown key 'step'"): check_eval_config(dict(finetune=dict(step=3)))
    with pytest.raises(ValueError, match='eval.finetune.recipe'): check_eval_config(dict(finetune=dict(recipe='beit')))
    with pytest.raises(ValueError, match='eval.finetune.fractions'): check_eval_config(dict(finetune=dict(fractions=[1.5])))

def test_few_label_finetune_layer_decay_reaches_the_optimizer():
    "eval.finetune.layer_decay overrides the recipe's (1.0: a from-scratch network's layers all at the head's lr)"
    from masklab.train import few_label_finetune, check_eval_config
    from masklab.evaluate import FINETUNE_RECIPES
    ds, split, net = _digits_split_and_net()
    def loss(**ld): return few_label_finetune(net, ds, split, dict(fractions=[0.2], steps=3, **ld), 16)['0.2']['final_loss']
    default = loss()
    assert loss(layer_decay=FINETUNE_RECIPES['short']['layer_decay']) == default  # the recipe's own value: the same run
    assert loss(layer_decay=1.0) != default  # another value: the blocks learn at another rate
    with pytest.raises(ValueError, match='eval.finetune.layer_decay'): check_eval_config(dict(finetune=dict(layer_decay=1.5)))
