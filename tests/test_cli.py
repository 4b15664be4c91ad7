"""The `masklab` console script as a user runs it: a real subprocess, exit codes, one-line errors."""
import json, subprocess, sys, shutil
from pathlib import Path
import pytest

def run(*args, cwd=None):
    exe = shutil.which('masklab') or str(Path(sys.executable).parent/'masklab')
    return subprocess.run([exe, *args], capture_output=True, text=True, cwd=cwd, timeout=300)

def test_version():
    r = run('--version')
    assert r.returncode == 0 and r.stdout.startswith('masklab ')

def test_data_lists_bundled_sets():
    r = run('data')
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info['digits']['images'] == 1797 and info['mnist']['images'] == 5000
    assert info['photos']['classes'] == 14

@pytest.mark.parametrize('method', ['msn', 'simmim'])
def test_views_writes_png(tmp_path, method):
    out = tmp_path/f'{method}.png'
    r = run('views', '--method', method, '--image', 'coffee', '--size', '64', '--out', str(out))
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'

@pytest.mark.parametrize('args, words', [
    (['views', '--image', 'no-such-photo'], 'neither a bundled photo'),
    (['views', '--out', 'x.txt'], 'must end in .png'),
    (['views', '--out', '/no/such/dir/x.png'], 'does not exist'),
    (['views', '--method', 'simmim', '--n', '0'], '--n must be >= 1'),
])
def test_bad_input_is_one_line(tmp_path, args, words):
    r = run(*args, cwd=tmp_path)
    assert r.returncode == 2
    assert 'Traceback' not in r.stderr
    assert words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr

def test_corrupt_image_file_is_one_line(tmp_path):
    bad = tmp_path/'bad.png'
    bad.write_bytes(b'\x89PNG not really')
    r = run('views', '--image', str(bad), '--out', str(tmp_path/'v.png'))
    assert r.returncode == 2 and 'could not be read' in r.stderr and 'Traceback' not in r.stderr

def test_debug_shows_traceback(tmp_path):
    r = run('--debug', 'views', '--image', 'no-such-photo', cwd=tmp_path)
    assert r.returncode != 0 and 'Traceback' in r.stderr

def test_python_dash_m(tmp_path):
    r = subprocess.run([sys.executable, '-m', 'masklab.cli', '--version'], capture_output=True, text=True)
    assert r.returncode == 0 and 'masklab' in r.stdout

def test_an_unexpected_error_is_one_line_and_exit_1(monkeypatch, capsys):
    "A bug or a broken environment (here a KeyError from inside a command) is one line; --debug shows the traceback"
    from masklab import cli
    def broken(args): raise KeyError('schedule')
    parser = cli.build_parser
    def patched():
        p = parser()
        for action in p._subparsers._group_actions:
            action.choices['data'].set_defaults(fn=broken)
        return p
    monkeypatch.setattr(cli, 'build_parser', patched)
    assert cli.main(['data']) == 1
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'unexpected error: KeyError' in err and '--debug' in err
    with pytest.raises(KeyError): cli.main(['--debug', 'data'])
