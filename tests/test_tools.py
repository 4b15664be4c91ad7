"""tools/gpu_reference.sh, the prepared GPU reference run (issue 18), checked where there is no GPU: its bad input,
its refusal without CUDA, and a budget that runs out (the sweep is stopped, its folder kept and copied back)."""
import json, os, subprocess, sys
from pathlib import Path
import pytest, torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT/'tools'/'gpu_reference.sh'

def run(*args, env=None, timeout=240):
    env = {**{k: v for k, v in os.environ.items() if k != 'OUT'},  # OUT: the device tool's folder, only when given
           'PATH': f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    return subprocess.run(['bash', str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)

@pytest.mark.parametrize('args, words', [(['--epochs', 'x'], "--epochs must be an integer >= 1, got 'x'"),
                                         (['--budget', '0'], "--budget must be a whole number of seconds >= 1, got '0'"),
                                         (['--bogus'], 'unknown argument --bogus')])
def test_bad_arguments(args, words):
    r = run(*args)
    assert r.returncode == 2 and words in r.stderr, r.stderr

@pytest.mark.skipif(torch.cuda.is_available(), reason='a CUDA machine would start the real run')
def test_refuses_without_cuda():
    r = run('--epochs', '1')
    assert r.returncode == 2 and 'no CUDA device here' in r.stderr, r.stderr

def test_budget_stops_the_sweep_and_copies_it_back(tmp_path):
    "A budget that runs out stops the sweep (exit 124; 15 s: past the checks, long before three evaluations end); what it wrote is copied under $OUT"
    back = tmp_path/'back'; back.mkdir()
    r = run('--dry-run', '--budget', '15', '--epochs', '3', '--out', str(tmp_path/'gpu-mnist-msn-3ep'), env={'OUT': str(back)})
    assert r.returncode == 124 and 'budget spent, rerun to continue' in r.stderr, r.stderr
    spec = json.loads((back/'gpu-mnist-msn-3ep'/'sweep.json').read_text())
    assert spec['base']['method'] == 'msn' and spec['base']['epochs'] == 4 and spec['base']['max_steps'] == 2
