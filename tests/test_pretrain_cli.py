"""`masklab pretrain` as a user runs it: presets, run folder, falling loss, one-line errors."""
import json, os, subprocess, sys, shutil
from pathlib import Path
import pytest
from masklab.cli import main

ENV = {**os.environ, 'OMP_NUM_THREADS': '2', 'MPLBACKEND': 'Agg'}

def masklab(*args, cwd=None):
    exe = shutil.which('masklab') or str(Path(sys.executable).parent/'masklab')
    return subprocess.run([exe, *args], capture_output=True, text=True, cwd=cwd, env=ENV, timeout=600)

def test_tiny_preset_runs_and_loss_falls(tmp_path):
    r = masklab('pretrain', '--preset', 'tiny', '--method', 'toy', '--out', str(tmp_path/'run'), '--set', 'max_steps=30',
                '--no-progress')
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    run = tmp_path/'run'
    for f in ('config.json', 'metrics.jsonl', 'model.safetensors', 'summary.json', 'figures/loss.png'):
        assert (run/f).exists(), f
    rows = [json.loads(l) for l in (run/'metrics.jsonl').read_text().splitlines()]
    assert [r['step'] for r in rows] == list(range(1, 31)) and {'loss', 'lr'} <= set(rows[0])
    first, last = sum(r['loss'] for r in rows[:5]) / 5, sum(r['loss'] for r in rows[-5:]) / 5
    assert last < first, (first, last)
    assert 0 <= s['knn']['accuracy'] <= 1

def test_simmim_tiny_preset(tmp_path):
    pytest.importorskip('masklab.simmim')
    r = masklab('pretrain', '--preset', 'tiny', '--out', str(tmp_path/'run'), '--set', 'max_steps=20', '--no-progress')
    assert r.returncode == 0, r.stderr
    rows = [json.loads(l) for l in (tmp_path/'run'/'metrics.jsonl').read_text().splitlines()]
    assert sum(r['loss'] for r in rows[-5:]) < sum(r['loss'] for r in rows[:5])
    assert (tmp_path/'run'/'figures'/'reconstructions.png').exists()
    # the run's own weights, drawn by `masklab reconstruct` (and a file that is not a checkpoint refused in one line)
    r = masklab('reconstruct', '--checkpoint', str(tmp_path/'run'), '--image', 'coffee', '--out', str(tmp_path/'r.png'))
    assert r.returncode == 0, r.stderr
    assert (tmp_path/'r.png').read_bytes()[:4] == b'\x89PNG'
    (tmp_path/'junk.safetensors').write_bytes(b'junk')
    r = masklab('reconstruct', '--checkpoint', str(tmp_path/'junk.safetensors'), '--out', str(tmp_path/'r.png'))
    assert r.returncode == 2 and 'Traceback' not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr

def test_msn_tiny_preset_saves_prototype_usage(tmp_path):
    r = masklab('pretrain', '--preset', 'tiny', '--method', 'msn', '--out', str(tmp_path/'run'), '--no-progress')
    assert r.returncode == 0, r.stderr
    assert (tmp_path/'run'/'figures'/'prototypes.png').exists()
    r = masklab('reconstruct', '--checkpoint', str(tmp_path/'run'), '--out', str(tmp_path/'r.png'))
    assert r.returncode == 2 and "holds a 'msn' model" in r.stderr

# `masklab pretrain` with no arguments (the default preset, loss falls) is README's main job: tests/test_readme.py

@pytest.mark.parametrize('args, words', [
    (['--method', 'mae'], "--method must be one of"),
    (['--preset', 'huge'], "--preset must be one of"),
    (['--preset', 'msn-vit-s16-800ep', '--method', 'simmim'], "is for --method msn"),
    (['--preset', 'simmim-swin-b-192-100ep'], "needs --data"),
    (['--method', 'toy', '--data', '/no/such/folder'], "neither a bundled set"),
    (['--method', 'toy', '--preset', 'tiny', '--batch-size', '100000'], "larger than the dataset"),
    (['--method', 'toy', '--preset', 'tiny', '--batch-size', '0'], "--batch-size must be >= 1"),
    (['--method', 'toy', '--preset', 'tiny', '--set', 'schedule.lrr=1'], "unknown key 'lrr'"),
    (['--method', 'toy', '--preset', 'tiny', '--set', 'nonsense'], "must look like key=value"),
    (['--method', 'toy', '--resume'], "nothing to resume"),
])
def test_bad_input_is_one_line(tmp_path, capsys, args, words):
    assert main(['pretrain', '--out', str(tmp_path/'r'), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1 and 'Traceback' not in err, err
    assert not (tmp_path/'r'/'checkpoints').exists()

def test_empty_folder_is_one_line(tmp_path, capsys):
    (tmp_path/'empty').mkdir()
    assert main(['pretrain', '--method', 'toy', '--data', str(tmp_path/'empty'), '--out', str(tmp_path/'r')]) == 2
    assert 'holds no images' in capsys.readouterr().err

def test_bad_input_subprocess_has_no_traceback(tmp_path):
    r = masklab('pretrain', '--method', 'nope', cwd=tmp_path)
    assert r.returncode == 2 and 'Traceback' not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr

def test_existing_run_needs_resume_and_resume_continues(tmp_path, capsys):
    out = str(tmp_path/'run')
    base = ['pretrain', '--method', 'toy', '--preset', 'tiny', '--out', out, '--no-progress', '--set', 'eval.knn=false']
    assert main(base) == 0
    assert main(base) == 2 and 'already holds a run' in capsys.readouterr().err
    assert main(base + ['--resume', '--batch-size', '8']) == 2 and 'has batch_size=16' in capsys.readouterr().err
    assert main(base + ['--resume']) == 0  # finished run: nothing left, the summary again

def test_nan_is_one_line_exit_1(tmp_path, capsys):
    out = tmp_path/'run'
    assert main(['pretrain', '--method', 'toy', '--preset', 'tiny', '--out', str(out), '--no-progress',
                 '--set', 'model.nan_at_step=3', '--set', 'save_every=2']) == 1
    err = capsys.readouterr().err.strip()
    assert 'at step 3' in err and len(err.splitlines()) == 1
    assert [p.name for p in (out/'checkpoints').iterdir()] == ['step-00000002.safetensors']
