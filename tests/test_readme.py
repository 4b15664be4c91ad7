"""README.md's quick start, as a newcomer pastes it: exactly two ```sh blocks, and the main job really runs."""
import json, re, shlex, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def sh_blocks():
    return re.findall(r'^```sh\n(.*?)^```$', (ROOT/'README.md').read_text(), re.S | re.M)

def test_two_sh_blocks_setup_then_tests():
    blocks = sh_blocks()
    assert len(blocks) == 2, blocks
    for b in blocks: assert 'python3 -m venv .venv' in b and 'pip install -e' in b
    assert 'masklab ' in blocks[0] and 'python tools/test.py' in blocks[1]

def test_main_job_runs(tmp_path):
    """Block 1's `masklab pretrain`, run as written in an empty folder but cut to a few steps (the whole run takes
    minutes; its result is the committed sweep in results/, which the claims ledger reads): it finishes on bundled
    data, writes its folder, and its summary judges the features against random init and raw pixels"""
    exe = shutil.which('masklab') or str(Path(sys.executable).parent/'masklab')
    cmds = [l for l in sh_blocks()[0].splitlines() if l.startswith('masklab ')]
    assert [shlex.split(l)[1] for l in cmds] == ['pretrain']
    args = shlex.split(cmds[0])[1:]
    r = subprocess.run([exe, *args, '--max-steps', '6'], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    run = tmp_path/args[args.index('--out') + 1]
    for f in ('config.json', 'metrics.jsonl', 'model.safetensors', 'summary.json', 'figures/loss.png'):
        assert (run/f).exists(), f
    s = json.loads((run/'summary.json').read_text())
    assert s['data'] == 'mnist' and s['steps'] == 6
    assert set(s['eval']) == {'pretrained', 'random_init', 'pixels'}
    for r in s['eval'].values(): assert 0 < r['knn'] <= 1 and set(r['fewshot']) == {'1', '2', '5'}

def test_ci_runs_the_readme_test_block():
    ci = (ROOT/'.ci'/'run').read_text()
    assert 'README.md' in ci and 'n==2' in ci
