"""The sweep runner as a user meets it: killed mid-sweep and rerun, and `masklab sweep` on the command line."""
import json, os, shutil, signal, subprocess, sys, textwrap, time
from pathlib import Path
import pytest
from masklab.sweep import run_sweep, read_results, point_id, expand_grid

# A toy-method sweep: 4 points, each a 40-step run that checkpoints every 10 steps, so a kill can land anywhere:
# between runs, inside a run (resumed from its checkpoint), or while a row is being written.
SCRIPT = textwrap.dedent('''
    import sys, torch
    torch.set_num_threads(1)
    from masklab.sweep import run_sweep
    base = dict(method='toy', data='digits', img_size=16, batch_size=16, epochs=None, max_steps=40, save_every=10,
                log_every=10, model=dict(width=4), eval=dict(knn=False, k=5))
    run_sweep(base, {'seed': [0, 1, 2, 3]}, sys.argv[1], metrics=[], log=None)
''')
GRID = {'seed': [0, 1, 2, 3]}

def test_killed_sweep_resumes(tmp_path):
    out = tmp_path/'sweep'
    script = tmp_path/'sweep.py'
    script.write_text(SCRIPT)
    p = subprocess.Popen([sys.executable, str(script), str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and p.poll() is None:
            if len(read_results(out)) >= 1: break
            time.sleep(0.05)
        assert p.poll() is None, f"the sweep ended before it could be killed: {p.communicate()[1][-2000:]}"
        time.sleep(0.3)  # land somewhere inside the next run
        p.send_signal(signal.SIGKILL)
        p.wait(30)
    finally:
        if p.poll() is None: p.kill()
    before = read_results(out)  # every line must parse: no half-written row
    assert 1 <= len(before) < 4
    r = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = read_results(out)
    assert [row['id'] for row in rows[:len(before)]] == [row['id'] for row in before]
    assert rows[:len(before)] == before  # finished rows are neither redone nor rewritten
    assert sorted(row['id'] for row in rows) == sorted(point_id(p) for p in expand_grid(GRID))
    assert all(row['steps'] == 40 for row in rows)
    assert len((out/'results.csv').read_text().splitlines()) == 5

def test_grid_is_validated_before_any_training(tmp_path):
    base = dict(method='toy', data='digits', img_size=16, max_steps=2)
    with pytest.raises(ValueError, match="unknown key 'lr_typo'"):
        run_sweep(base, [{'seed': 0}, {'schedule.lr_typo': 1.0}], tmp_path/'s', metrics=[], log=None)
    assert not (tmp_path/'s').exists()
    with pytest.raises(ValueError, match="metrics must be one of"):
        run_sweep(base, {'seed': [0]}, tmp_path/'s', metrics=['accuracy'], log=None)

def masklab(*args, cwd):
    exe = shutil.which('masklab') or str(Path(sys.executable).parent/'masklab')
    return subprocess.run([exe, *args], capture_output=True, text=True, cwd=cwd, timeout=300)

def test_cli_sweep_runs(tmp_path):
    args = ['sweep', '--method', 'simmim', '--preset', 'tiny', '--max-steps', '2', '--no-progress',
            '--set', 'model.encoder_kwargs={"patch_size": 4}', '--set', 'eval.knn=false',
            '--grid', 'model.mask_ratio=0.3,0.9', '--grid', 'model.mask_patch_size=8', '--metric', 'avg_dist',
            '--plot', 'mask_ratio:avg_dist', '--out', 'sw']
    r = masklab(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout)
    assert summary['rows'] == 2 and (tmp_path/summary['figures'][0]).is_file()
    rows = read_results(tmp_path/'sw')
    assert [row['model.mask_ratio'] for row in rows] == [0.3, 0.9]
    assert rows[0]['avg_dist'] < rows[1]['avg_dist']  # more of the image hidden: farther from a visible pixel

def test_cli_sweep_bad_input_is_one_line(tmp_path):
    r = masklab('sweep', '--grid', 'model.mask_ratio=0.5', '--metric', 'accuracy', cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and '--metric' in r.stderr, r.stderr
    assert not any(tmp_path.iterdir())  # nothing was started

def test_sweep_arguments_fail_before_the_folder_is_made(tmp_path):
    base = dict(method='toy', data='digits', img_size=16, max_steps=2)
    with pytest.raises(TypeError, match='base must be a config dict'): run_sweep([base], {'seed': [0]}, tmp_path/'s', log=None)
    with pytest.raises(ValueError, match='grid must be a dict of axes or a non-empty list'): run_sweep(base, [], tmp_path/'s', log=None)
    with pytest.raises(ValueError, match="measures simmim runs, not method 'toy'"):
        run_sweep(base, {'seed': [0]}, tmp_path/'s', metrics=['avg_dist'], log=None)
    assert not (tmp_path/'s').exists()
    (tmp_path/'f').write_text('')
    with pytest.raises(ValueError, match='exists and is not a folder'): run_sweep(base, {'seed': [0]}, tmp_path/'f', metrics=[], log=None)


def test_read_results_filters_rows_and_attaches_logs(tmp_path):
    "read_results(where=..., logs=True): the rows of one setting, each with its run's committed training log"
    import json
    rows = [dict(id='a', **{'model.T': 1.0}, seed=0), dict(id='b', **{'model.T': 0.25}, seed=0)]
    (tmp_path/'results.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    (tmp_path/'runs'/'a').mkdir(parents=True)
    (tmp_path/'runs'/'a'/'metrics.jsonl').write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n')
    got = read_results(tmp_path, {'model.T': 1.0}, logs=True)
    assert [r['id'] for r in got] == ['a'] and [x['loss'] for x in got[0]['log']] == [2.0, 1.5]
    assert read_results(tmp_path, {'model.T': 0.25}, logs=True)[0]['log'] == []  # no log kept: an empty list

def test_summary_columns_flatten_each_model_and_fine_tune():
    "a run summary's evaluation as flat row columns: pre-trained plain, random init `init_`, pixels `pixels_`; fine-tunes with their own-label accuracy"
    from masklab.sweep import summary_columns
    ft = {'0.1': dict(accuracy=0.6, train_accuracy=0.7, labels=400, steps=1000), '0.01': dict(accuracy=0.3, labels=40, steps=1000)}
    s = dict(eval=dict(pretrained=dict(knn=0.5, fewshot={'5': dict(mean=0.4)}, finetune=ft),
                       random_init=dict(knn=0.2, finetune={'0.1': dict(accuracy=0.55, train_accuracy=0.65)}), pixels=None))
    assert summary_columns(s) == {'knn': 0.5, 'fewshot_5': 0.4, 'finetune_0.1': 0.6, 'finetune_train_0.1': 0.7,
                                  'finetune_0.01': 0.3, 'init_knn': 0.2, 'init_finetune_0.1': 0.55, 'init_finetune_train_0.1': 0.65}

def test_reevaluate_measures_finished_runs_again_without_training(tmp_path):
    "run_sweep(reevaluate=True): after a fix to the evaluation, each finished run's own columns are measured again from its saved model"
    from masklab.train import evaluate_run
    base = dict(method='simmim', data='digits', img_size=16, batch_size=16, epochs=None, max_steps=2, device='cpu',
                model=dict(encoder='simmim_vit_tiny', encoder_kwargs=dict(patch_size=4, embed_dim=32, depth=1, num_heads=2),
                           head='linear', mask_patch_size=8, mask_ratio=0.6),
                eval=dict(knn=True, k=5, heldout=0.2, fewshot=[1], n_splits=1, finetune=dict(fractions=[0.2], steps=3)))
    out = tmp_path/'sw'
    [row] = run_sweep(base, {'seed': [0]}, out, metrics=[], log=None)
    run = out/'runs'/row['id']
    trained = (run/'model.safetensors').stat().st_mtime_ns, (run/'metrics.jsonl').read_text()
    stale = {**row, 'finetune_0.1': 0.5, 'finetune_0.2': -1.0, 'init_knn': -1.0}  # as an older evaluation left it
    (out/'results.jsonl').write_text(json.dumps(stale) + '\n')
    [again] = run_sweep(base, {'seed': [0]}, out, metrics=[], log=None, reevaluate=True)
    assert again['finetune_0.2'] == row['finetune_0.2'] and again['init_knn'] == row['init_knn']  # measured, not kept
    assert again['knn'] == row['knn'] and again['steps'] == row['steps'] and again['evaluate_s'] >= 0
    assert again['finetune_0.1'] == 0.5  # a column the evaluation does not make is left as it was
    assert ((run/'model.safetensors').stat().st_mtime_ns, (run/'metrics.jsonl').read_text()) == trained  # no training
    assert 'evaluated' in json.loads((run/'summary.json').read_text())
    assert read_results(out) == [again] and len((out/'results.csv').read_text().splitlines()) == 2
    assert run_sweep(base, {'seed': [0]}, out, metrics=[], log=None) == [again]  # without it: skipped, as before
    (run/'model.safetensors').rename(tmp_path/'kept.safetensors')  # weights are not committed: a fresh clone has none
    table = (out/'results.jsonl').read_text()
    with pytest.raises(ValueError, match=r"1 finished run\(s\) of .* have no saved model .*" + row['id']):
        run_sweep(base, {'seed': [0]}, out, metrics=[], log=None, reevaluate=True)
    assert (out/'results.jsonl').read_text() == table  # refused before anything was measured or rewritten
    (run/'summary.json').unlink()
    with pytest.raises(ValueError, match='has no summary.json'): evaluate_run(run)
