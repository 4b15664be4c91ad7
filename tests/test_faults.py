"""Faults during training: a full disk or an unwritable folder mid-save, NaN/inf losses (stop or skip), bad CLI
values, and a worker killed under `torchrun --max-restarts`."""
import errno, json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest, torch
import masklab.checkpoints as ckio  # where atomic_write, the writer every checkpoint goes through, lives
from masklab.trainer import Trainer, ToyMethod, TrainingError, checkpoints
from masklab.checkpoints import load_state
from masklab.data import photo_crops, simmim_transform

torch.set_num_threads(1)
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'MPLBACKEND': 'Agg'}

@pytest.fixture(scope='module')
def ds(): return photo_crops(n_per_photo=2, size=32)

def make(ds, out=None, method=None, steps=6, **kw):
    torch.manual_seed(0)
    return Trainer(method or ToyMethod(width=4), ds, simmim_transform(32), batch_size=4, max_steps=steps, out=out,
                   save_every=2, log_every=1, device='cpu', progress=False, **kw)

def failing_open(exc):
    "An `open` whose files being written write half of their bytes, then raise `exc` (a disk that fills up)"
    real = open
    class Half:
        def __init__(self, f): self.f = f
        def write(self, data): self.f.write(data[:len(data) // 2]); self.f.flush(); raise exc
        def __getattr__(self, k): return getattr(self.f, k)
        def __enter__(self): return self
        def __exit__(self, *a): self.f.close()
    return lambda file, mode='r', *a, **k: Half(real(file, mode, *a, **k)) if 'w' in mode else real(file, mode, *a, **k)

@pytest.mark.parametrize('exc', [OSError(errno.ENOSPC, 'No space left on device'), PermissionError(errno.EACCES, 'Permission denied')])
def test_disk_full_half_way_keeps_previous_checkpoint(ds, tmp_path, monkeypatch, exc):
    make(ds, tmp_path, steps=6).fit(until=2)
    good = checkpoints(tmp_path/'checkpoints')
    assert [c.name for c in good] == ['step-00000002.safetensors']
    before = good[0].read_bytes()
    monkeypatch.setattr(ckio, "open", failing_open(exc), raising=False)  # atomic_write's writer fails half-way
    with pytest.raises(type(exc)): make(ds, tmp_path, steps=6).fit(resume=True)
    monkeypatch.undo()
    assert [c.name for c in checkpoints(tmp_path/'checkpoints')] == ['step-00000002.safetensors']
    assert good[0].read_bytes() == before and not list((tmp_path/'checkpoints').glob('.*tmp*'))
    s = make(ds, tmp_path, steps=6).fit(resume=True)  # and the run goes on from it
    assert s['steps'] == 6 and load_state(checkpoints(tmp_path/'checkpoints')[-1])[1]['step'] == 6

@pytest.mark.skipif(hasattr(os, 'geteuid') and os.geteuid() == 0, reason='root writes into read-only folders')
def test_unwritable_folder_keeps_previous_checkpoint(ds, tmp_path):
    make(ds, tmp_path, steps=6).fit(until=2)
    ck = checkpoints(tmp_path/'checkpoints')[0]; before = ck.read_bytes()
    os.chmod(tmp_path/'checkpoints', 0o500)
    try:
        with pytest.raises(PermissionError): make(ds, tmp_path, steps=6).fit(resume=True)
    finally: os.chmod(tmp_path/'checkpoints', 0o700)
    assert ck.read_bytes() == before

class Terms(ToyMethod):
    "The toy loss plus logged terms; `bad` maps forward-call numbers to the term made non-finite there"
    def __init__(self, bad, value=float('nan'), **kw): super().__init__(**kw); self.bad, self.value, self.calls = bad, value, 0
    def forward(self, batch):
        out = super().forward(batch)
        ce, reg = out['loss'].detach() * 0 + 1.0, out['loss'].detach() * 0 + 0.5
        term = self.bad.get(self.calls); self.calls += 1
        if term == 'ce': ce = ce * self.value; out['loss'] = out['loss'] + ce
        elif term == 'loss': out['loss'] = out['loss'] * self.value
        return {**out, 'ce': ce, 'reg': reg}

@pytest.mark.parametrize('value', [float('nan'), float('inf')])
def test_nonfinite_loss_names_step_and_term(ds, tmp_path, value):
    t = make(ds, tmp_path, Terms({3: 'ce'}, value, width=4), steps=6)
    with pytest.raises(TrainingError) as e: t.fit()
    msg = str(e.value)
    assert f'the loss is {value} at step 3' in msg and 'non-finite terms: loss, ce' in msg and 'reg' not in msg
    assert [c.name for c in checkpoints(tmp_path/'checkpoints')] == ['step-00000002.safetensors']
    tensors, meta = load_state(checkpoints(tmp_path/'checkpoints')[0])
    assert meta['step'] == 2 and all(torch.isfinite(v).all() for v in tensors.values() if v.is_floating_point())

def test_skip_nonfinite_skips_then_stops(ds):
    t = make(ds, None, Terms({1: 'loss', 3: 'loss'}, width=4), steps=6, skip_nonfinite=1)
    it = iter(t._loader(0))
    t.train_step(it)
    w = {k: v.clone() for k, v in t.module.state_dict().items()}
    rec = t.train_step(it)  # a NaN step: skipped, weights untouched
    assert 'non-finite' in rec['skipped'] and t.step == 2 and t.nonfinite_skipped == 1
    for k, v in t.module.state_dict().items(): assert torch.equal(v, w[k]), k
    t.train_step(it); t.train_step(it)  # a good step resets the count, so the second NaN is skipped too
    assert t.nonfinite_skipped == 2 and t.step == 4
    t2 = make(ds, None, Terms({1: 'loss', 2: 'loss'}, width=4), steps=6, skip_nonfinite=1)
    with pytest.raises(TrainingError, match=r'at step 2 .*1 step\(s\) in a row skipped before it \(skip_nonfinite=1\)'): t2.fit()
    assert t2.nonfinite_skipped == 1
    with pytest.raises(ValueError, match='skip_nonfinite'): make(ds, skip_nonfinite=-1)

def test_cli_skip_nonfinite(tmp_path, capsys):
    from masklab.cli import main
    args = ['pretrain', '--no-progress', '--method', 'toy', '--preset', 'tiny', '--set', 'max_steps=8', '--set', 'eval.knn=false',
            '--set', 'model.nan_at_step=3', '--skip-nonfinite', '2', '--out', str(tmp_path/'run')]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'at step 5' in err[0] and '2 step(s) in a row skipped' in err[0], err
    assert json.loads((tmp_path/'run'/'config.json').read_text())['skip_nonfinite'] == 2

def test_cli_bad_skip_nonfinite_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, '-m', 'masklab.cli', 'pretrain', '--preset', 'tiny', '--method', 'toy',
                        '--skip-nonfinite', '-1', '--out', str(tmp_path/'r')], capture_output=True, text=True, env=ENV, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and '--skip-nonfinite' in lines[0] and '-1' in lines[0], r.stderr
    assert 'Traceback' not in r.stderr

def test_torchrun_max_restarts_resumes_after_a_killed_worker(tmp_path):
    args = ['-m', 'masklab.cli', 'pretrain', '--no-progress', '--method', 'toy', '--preset', 'tiny', '--set', 'max_steps=100',
            '--set', 'eval.knn=false', '--save-every', '5']
    run = tmp_path/'killed'
    p = subprocess.Popen([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                          '--max-restarts=1', *args, '--out', str(run)], env=ENV, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list((run/'checkpoints').glob('step-0000001*.safetensors')): time.sleep(0.02)
    workers = Path(f'/proc/{p.pid}/task/{p.pid}/children').read_text().split()  # torchrun's own worker processes
    assert len(workers) == 2, workers
    os.kill(int(workers[-1]), signal.SIGKILL)
    try: out, err = p.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL); p.communicate()  # this test's own process group: torchrun and its workers
        pytest.fail('the restarted torchrun group hung')
    assert p.returncode == 0, err[-3000:]
    assert 'restart 1 by torchrun; resuming' in err and 'exitcode: -9' in err
    assert json.loads(out.strip().splitlines()[-1])['steps'] == 100
    steps = [json.loads(l)['step'] for l in (run/'metrics.jsonl').read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 100  # resumed, not started again: no step twice
    full = tmp_path/'full'
    subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', *args, '--out',
                    str(full)], env=ENV, check=True, capture_output=True, timeout=300)  # the same run, never killed
    from safetensors.torch import load_file
    a, b = load_file(run/'model.safetensors'), load_file(full/'model.safetensors')
    d = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
    print(f"killed + restarted vs uninterrupted: max |w1 - w2| = {d:.3g}")
    assert d == 0.0

def test_cli_oserror_is_one_line_exit_1(tmp_path, capsys, monkeypatch):
    "An OSError during a run (here: the disk fills) is one line and exit 1 (the run failed, the input was fine)"
    import errno, masklab.cli as cli
    def full(*a, **k): raise OSError(errno.ENOSPC, 'No space left on device', str(tmp_path/'run'/'checkpoints'))
    monkeypatch.setattr(cli, 'pretrain', full)
    rc = cli.main(['pretrain', '--method', 'toy', '--preset', 'tiny', '--out', str(tmp_path/'run'), '--no-progress'])
    err = capsys.readouterr().err
    assert rc == 1 and 'Traceback' not in err and len(err.strip().splitlines()) == 1, err
    assert 'masklab pretrain: error: [Errno 28] No space left on device' in err
