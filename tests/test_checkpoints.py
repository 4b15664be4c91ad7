"""masklab.checkpoints: no pickled code runs (other globals become inert placeholders), damaged files name themselves,
mismatches say what differs, and the official SimMIM / MSN layouts, as the official code saves them, import bit for bit."""
import collections, os, pickle, sys, types
from contextlib import contextmanager
from pathlib import Path
import pytest, torch
from torch import nn
from masklab.checkpoints import (CheckpointError, Pickled, load, save, load_into, mismatch, import_msn, import_simmim,
                                 to_official_msn, to_official_simmim)

torch.set_num_threads(1)

class Evil:
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (os.system, (f"touch {self.marker}",))

class EvilExec:
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (exec, (f"open({str(self.marker)!r}, 'w').close()",))

@pytest.mark.parametrize('how', ['torch', 'torch-nested', 'legacy'])
def test_pickled_code_never_runs_and_is_named(tmp_path, how):
    marker, f = tmp_path/'PWNED', tmp_path/'evil.pth'
    obj = {'model': {'w': torch.ones(2)}, 'x': Evil(marker), 'args': [1, {'a': EvilExec(marker)}]}
    torch.save(obj, f, _use_new_zipfile_serialization=how != 'legacy')
    if how == 'torch-nested': torch.save({'outer': obj}, f)
    before = set(sys.modules)
    t, m = load(f)
    assert not marker.exists(), 'the pickled code ran'
    assert set(sys.modules) == before, 'the load imported a module'
    pre = 'outer.' if how == 'torch-nested' else ''
    assert torch.equal(t[pre + 'model.w'], torch.ones(2))
    x, a = m[pre + 'x'], m[pre + 'args.1.a']
    assert isinstance(x, Pickled) and x.name == f"{os.system.__module__}.system" and x.args == (f"touch {marker}",)
    assert isinstance(a, Pickled) and a.name == 'builtins.exec' and 'PWNED' in a.args[0]
    assert repr(type(x)) == f"<global {os.system.__module__}.system, never imported>"
    import copy
    y = copy.deepcopy(x)  # a copy is the same record, not a call
    assert (y.name, y.args, y.state, y.dictitems) == (x.name, x.args, x.state, x.dictitems) and not marker.exists()

def test_tensor_with_attributes_and_tensor_subclass(tmp_path):
    "A tensor carrying python attributes comes back as a tensor; one of an unknown subclass is a placeholder holding it"
    t = torch.arange(3.); t.note = 'x'
    torch.save({'t': t, 's': torch.ones(2).as_subclass(Sub)}, tmp_path/'s.pth')
    got, m = load(tmp_path/'s.pth')
    assert torch.equal(got['t'], t) and type(got['t']) is torch.Tensor
    assert m['s'].name == 'torch._tensor._rebuild_from_type_v2' and torch.equal(m['s'].args[0], torch.ones(2))
    assert m['s'].args[1].name.endswith('.Sub')

def test_bare_pickle_is_refused_and_never_runs(tmp_path):
    marker, f = tmp_path/'PWNED', tmp_path/'evil.pth'
    f.write_bytes(pickle.dumps({'x': Evil(marker)}, protocol=2))
    with pytest.raises(CheckpointError, match='bare pickle, not a torch file') as e: load(f)
    assert str(f) in str(e.value) and not marker.exists()

def test_a_module_named_by_the_file_is_never_imported(tmp_path, monkeypatch):
    "A function of a module not yet imported: the module's import would have side effects, its function another"
    mod, imported, called = 'masklab_test_sideeffect_mod', tmp_path/'IMPORTED', tmp_path/'CALLED'
    (tmp_path/f'{mod}.py').write_text(f"open({str(imported)!r}, 'w').close()\n"
                                      f"def boom(path): open(path, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    m = __import__(mod)
    class Call:
        def __reduce__(self): return (m.boom, (str(called),))
    torch.save({'w': torch.zeros(3), 'x': Call()}, tmp_path/'f.pth')
    del sys.modules[mod]; imported.unlink()
    t, meta = load(tmp_path/'f.pth')
    assert mod not in sys.modules and not imported.exists() and not called.exists()
    assert meta['x'].name == f"{mod}.boom" and meta['x'].args == (str(called),) and torch.equal(t['w'], torch.zeros(3))

class Sub(torch.Tensor): pass

@pytest.mark.parametrize('zipped', [True, False], ids=['zip', 'legacy'])
def test_torch_formats_rebuild_exactly(tmp_path, zipped):
    "Every dtype, shared storages and views, conj bits, parameters, bytes, sets: as torch.load (trusted) returns them"
    torch.manual_seed(0)
    big = torch.randn(6, 4)
    obj = {'f32': torch.randn(3), 'f16': torch.randn(2, dtype=torch.float16), 'bf16': torch.randn(2, dtype=torch.bfloat16),
           'f64': torch.randn(2, dtype=torch.float64), 'u16': torch.ones(3, dtype=torch.uint16),
           'f8': torch.ones(2, dtype=torch.float8_e4m3fn), 'c64': torch.randn(2, dtype=torch.complex64),
           'conj': torch.randn(3, dtype=torch.complex64).conj(), 'bool': torch.tensor([True, False]),
           'i64': torch.arange(5), 'empty': torch.empty(0, 3), 'view': big[1:3, ::2], 'tail': big[2:],
           'param': nn.Parameter(torch.randn(2)), 'grad': torch.randn(2).requires_grad_(),
           'bytes': b'\x00\xffab', 'nobytes': b'', 'set': {1, 2}, 'fs': frozenset({'a'}), 'cplx': 1 + 2j,
           'od': collections.OrderedDict(b=1, a=2), 'dtype': torch.bfloat16, 'dev': torch.device('cpu'), 'size': torch.Size([2, 3]),
           'nested': [1, (2.5, 'x'), {'k': None}]}
    f = tmp_path/'x.pth'
    torch.save(obj, f, _use_new_zipfile_serialization=zipped)
    from masklab.checkpoints import _read_zip, _read_legacy
    got = (_read_zip if zipped else _read_legacy)(f)
    torch.save(obj, tmp_path/'ref.pth')  # torch.load cannot read uint16 / float8 from a legacy file: the zip one is the reference
    ref = torch.load(tmp_path/'ref.pth', weights_only=False)  # our own file: trusted
    assert list(got) == list(ref)
    raw = lambda t: t.resolve_conj().contiguous().view(torch.uint8) if t.dtype != torch.bool else t
    for k, v in ref.items():
        g = got[k]
        assert type(g) is type(v), k
        if isinstance(v, torch.Tensor):
            assert (g.dtype, g.shape, g.stride(), g.storage_offset(), g.is_conj(), g.requires_grad) == \
                   (v.dtype, v.shape, v.stride(), v.storage_offset(), v.is_conj(), v.requires_grad), k
            assert torch.equal(raw(g), raw(v)), k
        else: assert g == v, k
    assert got['view'].untyped_storage().data_ptr() == got['tail'].untyped_storage().data_ptr()  # one storage, two views
    t, m = load(f)
    assert set(t) == {k for k, v in ref.items() if isinstance(v, torch.Tensor)}
    assert m['bytes'] == b'\x00\xffab' and m['set'] == {1, 2} and m['nested.1'] == (2.5, 'x') and m['nested.2.k'] is None

def test_storage_of_the_wrong_size_is_refused(tmp_path):
    import zipfile
    torch.save({'w': torch.ones(4)}, tmp_path/'good.pth')
    with zipfile.ZipFile(tmp_path/'good.pth') as z, zipfile.ZipFile(tmp_path/'bad.pth', 'w') as out:
        for n in z.namelist(): out.writestr(n, z.read(n)[:8] if n.endswith('/data/0') else z.read(n))
    with pytest.raises(CheckpointError, match=r"could not be read.*storage .*data/0.*expected 16 bytes") as e: load(tmp_path/'bad.pth')
    assert str(tmp_path/'bad.pth') in str(e.value)

def test_torchscript_is_refused(tmp_path):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.jit.save(torch.jit.script(nn.Linear(2, 2)), tmp_path/'ts.pt')
    with pytest.raises(CheckpointError, match='TorchScript archive'): load(tmp_path/'ts.pt')

class CfgNode(dict):
    "Stands in for yacs.config.CfgNode: a dict subclass whose keys pickle as dict items and whose flags live in __dict__"
    def __init__(self, d=None):
        super().__init__(d or {})
        self.__dict__.update({'__immutable__': True, '__deprecated_keys__': set(), '__renamed_keys__': {}, '__new_allowed__': False})
    def __getattr__(self, k):
        if k in self: return self[k]
        raise AttributeError(k)

@contextmanager
def registered_as(module:str, cls):
    "Pickle `cls` under `module` (as the released files name yacs.config.CfgNode); sys.modules as it was afterwards"
    names = [module.rsplit('.', 1)[0], module] if '.' in module else [module]
    old = {k: sys.modules.get(k) for k in names}
    cls.__module__, cls.__qualname__ = module, cls.__name__
    for k in names: sys.modules[k] = types.ModuleType(k)
    setattr(sys.modules[module], cls.__name__, cls)
    try: yield
    finally:
        cls.__module__, cls.__qualname__ = __name__, cls.__name__
        for k, v in old.items():
            if v is None: sys.modules.pop(k, None)
            else: sys.modules[k] = v

def official_simmim_save(model, path, cfg, epoch=99):
    "What SimMIM's utils.save_checkpoint writes: model, optimizer, lr_scheduler, max_accuracy, epoch, config"
    from timm.scheduler.cosine_lr import CosineLRScheduler
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    for p in model.parameters(): p.grad = torch.randn_like(p)
    opt.step(); opt.zero_grad()
    sched = CosineLRScheduler(opt, t_initial=1000, lr_min=1e-6, warmup_lr_init=5e-7, warmup_t=50, cycle_limit=1, t_in_epochs=False)
    torch.save({'model': to_official_simmim(model)['model'], 'optimizer': opt.state_dict(), 'lr_scheduler': sched.state_dict(),
                'max_accuracy': 0.0, 'epoch': epoch, 'config': cfg}, path)
    return opt

@pytest.mark.parametrize('name', ['simmim_vit_tiny', 'simmim_beit_tiny', 'simmim_swin_tiny'])
def test_official_simmim_checkpoint_with_config_imports(tmp_path, name):
    from masklab.encoders import create_encoder
    from masklab.simmim import SimMIM
    torch.manual_seed(0); src = SimMIM(create_encoder(name))
    torch.manual_seed(1); dst = SimMIM(create_encoder(name))
    kind = 'swin' if 'swin' in name else 'vit'
    cfg = CfgNode(dict(MODEL=CfgNode(dict(TYPE=kind, NAME='simmim_pretrain')), TRAIN=CfgNode(dict(EPOCHS=100, BASE_LR=8e-4)),
                       AMP_OPT_LEVEL='O1'))
    f = tmp_path/'ckpt_epoch_99.pth'
    with registered_as('yacs.config', CfgNode): opt = official_simmim_save(src, f, cfg)
    before = set(sys.modules)
    t, m = load(f)
    assert set(sys.modules) == before and 'yacs.config' not in sys.modules
    c = m['config']
    assert isinstance(c, Pickled) and c.name == 'yacs.config.CfgNode' and c.args == ()
    assert set(c.dictitems) == {'MODEL', 'TRAIN', 'AMP_OPT_LEVEL'} and c['MODEL']['TYPE'] == kind and c['TRAIN']['BASE_LR'] == 8e-4
    assert isinstance(c['MODEL'], Pickled) and dict(c['MODEL']) == {'TYPE': kind, 'NAME': 'simmim_pretrain'}
    assert c.state == {'__immutable__': True, '__deprecated_keys__': set(), '__renamed_keys__': {}, '__new_allowed__': False}
    assert m['epoch'] == 99 and m['max_accuracy'] == 0.0 and m['lr_scheduler.t_initial'] == 1000
    osd = opt.state_dict()
    assert torch.equal(t['optimizer.state.0.exp_avg'], osd['state'][0]['exp_avg']) and m['optimizer.param_groups.0.lr'] == osd['param_groups'][0]['lr'] == 5e-7
    import_simmim(f, dst)
    for k, v in src.state_dict().items(): assert torch.equal(v, dst.state_dict()[k]), k
    enc = create_encoder(name); import_simmim(f, enc)  # into a bare encoder, as for fine-tuning
    for k, v in src.encoder.state_dict().items(): assert torch.equal(v, enc.state_dict()[k]), k

def test_real_yacs_config_is_a_placeholder(tmp_path):
    "With yacs installed, a real CfgNode (as in the released files) reads the same as the stand-in"
    yacs_config = pytest.importorskip('yacs.config')
    c = yacs_config.CfgNode(); c.MODEL = yacs_config.CfgNode(); c.MODEL.TYPE = 'swin'; c.MODEL.DEPTHS = [2, 2, 6, 2]; c.freeze()
    torch.save({'model': {'encoder.w': torch.ones(2)}, 'config': c}, tmp_path/'c.pth')
    t, m = load(tmp_path/'c.pth')
    p = m['config']
    assert p.name == 'yacs.config.CfgNode' and p['MODEL']['DEPTHS'] == [2, 2, 6, 2] and p.state['__immutable__'] is True
    assert torch.equal(t['model.encoder.w'], torch.ones(2))

def test_plain_torch_file_loads_flat(tmp_path):
    torch.save({'model': {'a.w': torch.ones(2)}, 'epoch': 3, 'prototypes': torch.zeros(4, 2)}, tmp_path/'x.pth')
    t, m = load(tmp_path/'x.pth')
    assert set(t) == {'model.a.w', 'prototypes'} and m['epoch'] == 3 and m['format'] == 'torch'

@pytest.mark.parametrize('name, cut', [('half.safetensors', 0.5), ('half.pth', 0.5), ('head.safetensors', 0.001), ('empty.pth', 0.0)])
def test_truncated_and_empty_files_name_the_file(tmp_path, name, cut):
    src = tmp_path/('src' + Path(name).suffix)
    if name.endswith('.safetensors'): save(src, {'w': torch.randn(32, 32)})
    else: torch.save({'w': torch.randn(32, 32)}, src)
    b = src.read_bytes()
    (tmp_path/name).write_bytes(b[:int(len(b) * cut)])
    with pytest.raises(ValueError) as e: load(tmp_path/name)
    assert str(tmp_path/name) in str(e.value)
    with pytest.raises(FileNotFoundError, match='nope.safetensors'): load(tmp_path/'nope.safetensors')

def test_save_roundtrip_and_meta(tmp_path):
    net = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5))
    p = save(tmp_path/'n.safetensors', net, dict(note='x'))
    t, m = load(p)
    assert m == dict(kind='weights', model='Sequential', note='x')
    other = load_into(nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5)), p)
    for k, v in net.state_dict().items(): assert torch.equal(v, other.state_dict()[k])

def test_mismatch_names_keys_and_shapes(tmp_path):
    p = save(tmp_path/'n.safetensors', nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2)))
    other = nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 2), nn.Linear(2, 2))
    rep = mismatch(other.state_dict(), load(p)[0])
    assert rep['missing'] == ['2.weight', '2.bias'] and rep['unexpected'] == []
    assert [k for k, *_ in rep['shape']] == ['0.weight', '0.bias', '1.weight']
    with pytest.raises(CheckpointError) as e: load_into(other, p)
    msg = str(e.value)
    assert str(p) in msg and '2 missing' in msg and '0.weight: file (8, 4) vs model (6, 4)' in msg
    before = {k: v.clone() for k, v in other.state_dict().items()}
    for k, v in other.state_dict().items(): assert torch.equal(v, before[k])  # nothing half-loaded

def test_other_method_is_named(tmp_path):
    net = nn.Linear(2, 2)
    p = save(tmp_path/'n.safetensors', net, dict(config=dict(method='msn')))
    with pytest.raises(CheckpointError, match="is for method 'msn', not 'simmim'"): load_into(net, p, method='simmim')
    load_into(net, p, method='msn')

def test_resume_with_another_model_says_what_differs(tmp_path):
    from masklab.train import Trainer, ToyMethod
    from masklab.data import photo_crops, simmim_transform
    ds = photo_crops(n_per_photo=2, size=32)
    mk = lambda w: Trainer(ToyMethod(width=w), ds, simmim_transform(32), batch_size=4, max_steps=2, out=tmp_path,
                           device='cpu', progress=False)
    mk(4).fit()
    with pytest.raises(CheckpointError, match=r"does not fit ToyMethod: .*of another shape \(encoder\.0\.weight"):
        mk(8).fit(resume=True)

@pytest.mark.parametrize('name', ['simmim_swin_tiny', 'simmim_beit_tiny', 'simmim_vit_tiny'])
def test_official_simmim_layout_imports_exactly(tmp_path, name):
    from masklab.encoders import create_encoder
    from masklab.simmim import SimMIM
    torch.manual_seed(0); src = SimMIM(create_encoder(name))
    torch.manual_seed(1); dst = SimMIM(create_encoder(name))
    off = to_official_simmim(src)
    keys = set(off['model'])
    assert all(k.startswith(('encoder.', 'decoder.0.')) for k in keys) and 'encoder.mask_token' in keys
    if 'swin' in name:  # the original Swin downsamples at the end of a stage: stage 0 has one, the last has none
        assert 'encoder.layers.0.downsample.reduction.weight' in keys and not any(k.startswith('encoder.layers.3.downsample') for k in keys)
    if 'beit' in name: assert 'encoder.blocks.0.gamma_1' in keys and 'encoder.rel_pos_bias.relative_position_index' in keys
    torch.save(off, tmp_path/'simmim.pth')
    import_simmim(tmp_path/'simmim.pth', dst)
    for k, v in src.state_dict().items(): assert torch.equal(v, dst.state_dict()[k]), k
    enc = create_encoder(name); import_simmim(off, enc)  # into a bare encoder
    for k, v in src.encoder.state_dict().items(): assert torch.equal(v, enc.state_dict()[k]), k

def test_official_msn_layout_imports_exactly(tmp_path):
    from masklab.encoders import create_encoder
    from masklab.msn import MSN
    torch.manual_seed(0); src = MSN(create_encoder('msn_vit_tiny'), hidden_dim=32, out_dim=16, num_prototypes=8)
    torch.manual_seed(1); dst = MSN(create_encoder('msn_vit_tiny'), hidden_dim=32, out_dim=16, num_prototypes=8)
    off = to_official_msn(src)
    assert all(k.startswith('module.') for k in off['target_encoder']) and 'module.fc.fc3.weight' in off['target_encoder']
    assert off['prototypes'].shape == (8, 16)
    torch.save(off, tmp_path/'msn.pth.tar')
    import_msn(tmp_path/'msn.pth.tar', dst)
    for enc in (dst.target_encoder, dst.encoder):
        for k, v in src.target_encoder.state_dict().items(): assert torch.equal(v, enc.state_dict()[k]), k
    assert torch.equal(src.prototypes, dst.prototypes)
    vit = create_encoder('msn_vit_tiny'); import_msn(off, vit)  # the backbone alone (for evaluation)
    for k, v in src.target_encoder.backbone.state_dict().items(): assert torch.equal(v, vit.state_dict()[k]), k
    small = MSN(create_encoder('msn_vit_tiny'), hidden_dim=32, out_dim=16, num_prototypes=4)
    with pytest.raises(CheckpointError, match=r'prototypes have shape \(8, 16\), the model \(4, 16\)'): import_msn(off, small)
    with pytest.raises(CheckpointError, match='not a SimMIM checkpoint'): import_simmim(off, create_encoder('simmim_vit_tiny'))
    with pytest.raises(CheckpointError, match='not an MSN checkpoint'): import_msn({'model': {'x': torch.ones(1)}}, dst)

def test_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match='path must be'): load(3)
    with pytest.raises(TypeError, match='obj must be an nn.Module or a dict'): save(tmp_path/'a', [1])
    with pytest.raises(TypeError, match='obj must map str to tensors'): save(tmp_path/'a', {'w': 1})
    with pytest.raises(ValueError, match='does not exist'): save(tmp_path/'no'/'a.safetensors', {'w': torch.ones(1)})
    with pytest.raises(TypeError, match='meta must be JSON-able'): save(tmp_path/'a', {'w': torch.ones(1)}, {'x': object()})
    with pytest.raises(TypeError, match='model must be an nn.Module'): load_into('net', {})
    with pytest.raises(TypeError, match='src must be'): load_into(nn.Linear(1, 1), 5)
