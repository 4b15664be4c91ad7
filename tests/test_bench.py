"Smoke test of bench/: each script runs at toy size and prints the JSON fields bench/run.py and RESULTS.md read (no timings are checked)"
import json, sys
from pathlib import Path
import pytest

BENCH = Path(__file__).resolve().parents[1] / 'bench'
pytestmark = pytest.mark.skipif(not BENCH.is_dir(), reason='bench/ is not in this checkout')

def _run(capsys, monkeypatch, script, *args) -> dict:
    monkeypatch.syspath_prepend(str(BENCH))
    mod = __import__(script)
    monkeypatch.setattr(sys, 'argv', [script, '--quick', '--repeats', '1', '--warmup', '0', '--threads', '1', *args])
    capsys.readouterr()
    mod.main()
    return json.loads(capsys.readouterr().out)

def _check_step(d, sides=('masklab', 'lightly')):
    assert {'load_average', 'threads', 'date', 'device_name'} <= set(d['machine'])
    assert d['matmul_peak']['flops_per_s'] > 0
    for model, r in d['results'].items():
        for s in sides:
            assert r[s]['images_per_s']['min'] <= r[s]['images_per_s']['median'] <= r[s]['images_per_s']['max']
            assert r[s]['flops']['total'] > 0 and r[s]['mfu'] > 0
        if {'masklab', 'lightly'} <= set(sides): assert r['ratio_masklab_over_lightly']['median'] > 0

def test_bench_scripts(capsys, monkeypatch):
    pytest.importorskip('lightly', reason='the bench extra (pip install -e ".[bench]") is not installed')
    res = {}
    res['msn_tiny'] = d = _run(capsys, monkeypatch, 'bench_msn')
    _check_step(d)
    f = d['results']['vit_micro']['masklab']['flops']
    assert f == d['results']['vit_micro']['lightly']['flops'], "both sides must do the same work"
    assert f['target_forward'] > 0 and f['backward'] > f['online_forward'] > 0
    res['simmim'] = d = _run(capsys, monkeypatch, 'bench_simmim')
    _check_step(d)
    res['scaling'] = d = _run(capsys, monkeypatch, 'bench_scaling', '--drops', '0,0.5')
    drop = d['drop']['rows']
    assert [r['patch_drop'] for r in drop] == [0.0, 0.5] and drop[1]['kept_tokens'] < drop[0]['kept_tokens']
    assert drop[1]['flops_over_flops_at_0'] < 1  # dropped tokens are not computed
    assert all('time_over_time_at_largest' in r for r in d['size']['rows'])
    res['optim'] = d = _run(capsys, monkeypatch, 'bench_optim')
    assert set(d['step_s']) == {'for_loop', 'foreach', 'fused'} and d['fused_speedup_over_for_loop'] > 0
    res['layout'] = d = _run(capsys, monkeypatch, 'bench_layout')
    assert d['step_nchw_over_channels_last'] > 0 and 0 < d['convs_share_of_step'] < 1
    res['data'] = d = _run(capsys, monkeypatch, 'bench_data')
    for k in ('msn', 'simmim'): assert d[k]['per_worker_samples_per_s'] > 0
    res['memory_simmim_masklab'] = d = _run(capsys, monkeypatch, 'bench_memory', '--method', 'simmim', '--side', 'masklab')
    assert d['step_peak_mib'] >= 0 and d['peak_mib'] > 0
    import run
    md = '\n'.join(run.summary(res))
    for text in ('msn_step', 'simmim_step', 'patch_drop', 'image size', 'samples/s per worker', 'fused', 'channels-last',
                 'step peak MiB'):
        assert text in md

def test_bench_simmim_swin_masklab_only(capsys, monkeypatch):
    "Swin (the GPU plan's SimMIM Swin-B at 192) runs on masklab's side alone, without the bench extra, and is tabled"
    d = _run(capsys, monkeypatch, 'bench_simmim', '--models', 'swin_base', '--sides', 'masklab')
    assert list(d['results']) == ['swin_micro'] and 'lightly' not in d['results']['swin_micro']
    _check_step(d, sides=('masklab',))
    assert d['masked_tokens_per_image'] == 192  # 64 px, 4 px tokens: 3 of 4 32-px units (ratio 0.6, rounded up)
    import run
    assert '| simmim_step | swin_micro |' in '\n'.join(run.summary({'simmim_swin': d}))

def test_bench_compile_side(capsys, monkeypatch):
    "--compile adds masklab_compiled (Trainer(compile=True)) beside the eager side, with the same FLOPs, and run.py tables it"
    d = _run(capsys, monkeypatch, 'bench_simmim', '--sides', 'masklab', '--compile')
    _check_step(d, sides=('masklab', 'masklab_compiled'))
    r = d['results']['vit_micro']
    assert r['masklab_compiled']['flops'] == r['masklab']['flops'] and r['ratio_masklab_compiled_over_masklab']['median'] > 0
    import run
    md = '\n'.join(run.summary({'simmim': d}))
    assert '`Trainer(compile=True)`' in md and '| simmim_step | vit_micro | 2 |' in md
