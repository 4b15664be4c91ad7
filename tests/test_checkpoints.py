"""masklab.checkpoints: no pickled code runs, damaged files name themselves, mismatches say what differs, and the
official SimMIM / MSN layouts import bit for bit."""
import os, pickle
from pathlib import Path
import pytest, torch
from torch import nn
from masklab.checkpoints import (CheckpointError, load, save, load_into, mismatch, import_msn, import_simmim,
                                 to_official_msn, to_official_simmim)

torch.set_num_threads(1)

class Evil:
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (os.system, (f"touch {self.marker}",))

@pytest.mark.parametrize('how', ['torch', 'torch-nested', 'pickle'])
def test_pickled_code_is_refused_and_never_runs(tmp_path, how):
    marker, f = tmp_path/'PWNED', tmp_path/'evil.pth'
    if how == 'torch': torch.save({'w': torch.ones(2), 'x': Evil(marker)}, f)
    elif how == 'torch-nested': torch.save({'model': {'w': torch.ones(2)}, 'args': [1, {'a': Evil(marker)}]}, f)
    else: f.write_bytes(pickle.dumps({'x': Evil(marker)}))
    with pytest.raises(CheckpointError, match='refused') as e: load(f)
    assert str(f) in str(e.value)
    assert not marker.exists(), 'the pickled code ran'

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
