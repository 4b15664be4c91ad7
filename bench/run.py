"""Run every bench script, save their JSON together and rewrite the numbers section of bench/RESULTS.md.

    python bench/run.py [--out bench/results.json] [--quick] [--device cpu|cuda] [--dtype fp32|bf16] [--threads N]
                        [--only msn,simmim,scaling,optim,layout,data,views,memory] [--no-md]

Each script runs in its own process (a fresh peak-memory count, no state carried between them). The default
(CPU, fp32) run took 6 minutes on a quiet 2-core machine, compiling the `--compile` sides included (3 minutes
before they were added; 17 under a load average of 8); --quick runs everything at toy sizes in about a
minute (it checks the scripts work; its numbers mean little). On a GPU: `--device cuda --dtype bf16` runs the
same suite in bf16 autocast with the GPU sizes (see GPU_ARGS). Bench numbers are never asserted by tests.
"""
import argparse, json, os, re, subprocess, sys, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = sys.executable

CPU_ARGS = {  # sized so the whole run stays near 10 minutes on 2 busy cores
    'msn_tiny': ['bench_msn.py', '--models', 'vit_tiny', '--batch', '8', '--repeats', '6', '--compile'],
    'msn_small': ['bench_msn.py', '--models', 'vit_small', '--batch', '4', '--repeats', '3', '--compile'],
    'simmim': ['bench_simmim.py', '--models', 'vit_tiny', '--batch', '16', '--repeats', '10', '--compile'],
    'scaling': ['bench_scaling.py', '--msn-model', 'vit_small', '--msn-batch', '8', '--simmim-batch', '16', '--repeats', '3'],
    'optim': ['bench_optim.py', '--model', 'vit_small', '--repeats', '5'],
    'layout': ['bench_layout.py', '--model', 'vit_tiny', '--batch', '16', '--repeats', '5'],
    'data': ['bench_data.py', '--batch', '16', '--batches', '2', '--repeats', '2'],
    'views': ['bench_views.py', '--batch', '16', '--repeats', '5'],
    'memory_msn_masklab': ['bench_memory.py', '--method', 'msn', '--side', 'masklab', '--batch', '4'],
    'memory_msn_lightly': ['bench_memory.py', '--method', 'msn', '--side', 'lightly', '--batch', '4'],
    'memory_simmim_masklab': ['bench_memory.py', '--method', 'simmim', '--side', 'masklab', '--batch', '16'],
    'memory_simmim_lightly': ['bench_memory.py', '--method', 'simmim', '--side', 'lightly', '--batch', '16'],
}
GPU_ARGS = {  # the GPU figures: SimMIM ViT-B/16 at batch 128, MSN ViT-S/16 at the official recipe (64 per GPU)
    'msn_small': ['bench_msn.py', '--models', 'vit_small', '--batch', '64', '--repeats', '10', '--warmup', '3', '--compile'],
    'simmim': ['bench_simmim.py', '--models', 'vit_base', '--batch', '128', '--repeats', '10', '--warmup', '3', '--compile'],
    'simmim_swin': ['bench_simmim.py', '--models', 'swin_base', '--img-size', '192', '--batch', '128', '--sides', 'masklab',
                    '--repeats', '10', '--warmup', '3', '--compile'],
    'scaling': ['bench_scaling.py', '--msn-model', 'vit_small', '--msn-batch', '64', '--simmim-model', 'vit_base',
                '--simmim-batch', '128', '--repeats', '5', '--warmup', '2'],
    'optim': ['bench_optim.py', '--model', 'vit_small', '--repeats', '10', '--warmup', '3'],
    'views': ['bench_views.py', '--batch', '64', '--repeats', '10', '--warmup', '2'],
    'memory_msn_masklab': ['bench_memory.py', '--method', 'msn', '--side', 'masklab', '--batch', '64'],
    'memory_simmim_masklab': ['bench_memory.py', '--method', 'simmim', '--side', 'masklab', '--model', 'vit_base', '--batch', '128'],
}

def run_one(args, common, timeout):
    t0 = time.time()
    p = subprocess.run([PY, str(HERE / args[0]), *args[1:], *common], capture_output=True, text=True, timeout=timeout,
                       cwd=HERE.parent, env={**os.environ, 'PYTHONWARNINGS': 'ignore'})
    if p.returncode: return dict(error=(p.stderr or p.stdout).strip().splitlines()[-1:], seconds=round(time.time() - t0, 1))
    return {**json.loads(p.stdout), 'seconds': round(time.time() - t0, 1)}

def _r(x, n=2): return '' if x is None else f"{x:.{n}f}"

def summary(res:dict) -> list[str]:
    "The markdown lines of the numbers section"
    L = []
    anym = next((v['machine'] for v in res.values() if isinstance(v, dict) and 'machine' in v), None)
    if anym:
        L.append(f"Taken {anym['date']} on {anym['device_name']} ({anym['device']}), torch {anym['torch']}, "
                 f"{anym['threads']} threads, load average at the start {anym['load_average']}.")
        L.append('')
    L += ['MFU = step FLOPs / median step time / the best matmul rate timed in the same A B A B rounds; in brackets, '
          'against the median matmul rate (fairer when the machine is busy).', '',
          '| step | model | batch | masklab img/s min / med / max | lightly img/s min / med / max | ratio (median; pairs min-max) '
          '| GFLOP/step | matmul GFLOP/s best / median | MFU masklab / lightly | load avg start, end |',
          '|---|---|---|---|---|---|---|---|---|---|']
    for key in ('msn_tiny', 'msn_small', 'simmim', 'simmim_swin'):
        v = res.get(key)
        if not v or 'results' not in v: continue
        for model, r in v['results'].items():
            m, l, ratio = r.get('masklab'), r.get('lightly'), r.get('ratio_masklab_over_lightly')
            ips = lambda s: f"{s['images_per_s']['min']:.2f} / {s['images_per_s']['median']:.2f} / {s['images_per_s']['max']:.2f}" if s else ''
            rt = f"{ratio['median']:.2f} ({ratio['pairs']['min']:.2f}-{ratio['pairs']['max']:.2f})" if ratio else ''
            pk = r.get('matmul_peak') or v.get('matmul_peak')
            mfu = lambda s: f"{100 * s['mfu']:.1f}% ({100 * s.get('mfu_at_median_peak', s['mfu']):.1f}%)" if s else ''
            L.append(f"| {v['bench']} | {model} | {v['batch']} | {ips(m)} | {ips(l)} | {rt} | "
                     f"{(m or l)['flops']['total'] / 1e9:.1f} | {pk['flops_per_s'] / 1e9:.1f} / {pk['median_flops_per_s'] / 1e9:.1f} | "
                     f"{mfu(m)} / {mfu(l)} | {v['machine']['load_average'][0]}, {v.get('machine_after', v['machine'])['load_average'][0]} |")
    comp = [(v, model, r) for key in ('msn_tiny', 'msn_small', 'simmim', 'simmim_swin') for v in [res.get(key)]
            if v and 'results' in v for model, r in v['results'].items() if r.get('masklab_compiled')]
    if comp:
        L += ['', "`Trainer(compile=True)` (`masklab pretrain --compile`: the transformer blocks compiled by inductor), "
              "timed in the same A B C rounds as the table above (compiling happens in the untimed warmup steps):", '',
              '| step | model | batch | masklab eager img/s (median) | masklab compiled img/s min / med / max | '
              'lightly img/s (median) | compiled / eager (median; pairs min-max) | compiled / lightly (median; pairs min-max) | MFU compiled |',
              '|---|---|---|---|---|---|---|---|---|']
        for v, model, r in comp:
            c, m, l = r['masklab_compiled'], r.get('masklab'), r.get('lightly')
            rat = lambda k: (f"{r[k]['median']:.2f} ({r[k]['pairs']['min']:.2f}-{r[k]['pairs']['max']:.2f})" if r.get(k) else '')
            L.append(f"| {v['bench']} | {model} | {v['batch']} | {_r(m and m['images_per_s']['median'])} | "
                     f"{c['images_per_s']['min']:.2f} / {c['images_per_s']['median']:.2f} / {c['images_per_s']['max']:.2f} | "
                     f"{_r(l and l['images_per_s']['median'])} | {rat('ratio_masklab_compiled_over_masklab')} | "
                     f"{rat('ratio_masklab_compiled_over_lightly')} | {100 * c['mfu']:.1f}% ({100 * c['mfu_at_median_peak']:.1f}%) |")
    sc = res.get('scaling')
    if sc and 'drop' in sc:
        d = sc['drop']
        L += ['', f"MSN masked anchor (online encoder + head, forward + backward), {d['model']}, batch {d['batch']}, "
              f"{d['img_size']} px:", '', '| patch_drop | kept tokens | kept fraction | time (s, median) | time / time at 0 | FLOPs / FLOPs at 0 |',
              '|---|---|---|---|---|---|']
        for row in d['rows']:
            L.append(f"| {row['patch_drop']} | {row['kept_tokens']} | {row['kept_fraction']} | {row['step_s']['median']:.3f} | "
                     f"{row['time_over_time_at_0']} | {row['flops_over_flops_at_0']} |")
        s = sc['size']
        L += ['', f"SimMIM training step against image size, {s['model']}, batch {s['batch']}:", '',
              '| image size | tokens | token fraction | time (s, median) | time / time at largest | img/s |', '|---|---|---|---|---|---|']
        for row in s['rows']:
            L.append(f"| {row['img_size']} | {row['tokens']} | {row['token_fraction']} | {row['step_s']['median']:.3f} | "
                     f"{row['time_over_time_at_largest']} | {row['images_per_s']} |")
    da = res.get('data')
    if da and 'msn' in da:
        L += ['', f"Data pipeline (Trainer's loader, num_workers={da['workers']}, bundled photos):", '',
              '| pipeline | samples/s per worker | model img/s (masklab, median) | loader / model |', '|---|---|---|---|']
        for name, key, model in (('MSN 12 views (224 + 96)', 'msn', ('msn_small', 'vit_small')),
                                 ('MSN 12 views (224 + 96)', 'msn', ('msn_tiny', 'vit_tiny')),
                                 ('SimMIM crop + mask (224)', 'simmim', ('simmim', 'vit_tiny'))):
            mv = res.get(model[0], {}).get('results', {}).get(model[1], {}).get('masklab')
            w = da[key]['per_worker_samples_per_s']
            L.append(f"| {name} vs {model[1]} | {w} | {_r(mv and mv['images_per_s']['median'])} | "
                     f"{_r(mv and w / mv['images_per_s']['median'])}x |")
    L += views_summary(res)
    op = res.get('optim')
    if op and 'step_s' in op:
        L += ['', f"AdamW step alone on {op['model']}, {op['parameters']:,} parameters (seconds, min / median / max):", '',
              "| for-loop (torch's CPU default) | foreach | fused (the Trainer's default now) | for-loop / fused |", '|---|---|---|---|']
        f = lambda s: f"{s['min']:.3f} / {s['median']:.3f} / {s['max']:.3f}"
        L.append(f"| {f(op['step_s']['for_loop'])} | {f(op['step_s']['foreach'])} | {f(op['step_s']['fused'])} | "
                 f"{op['fused_speedup_over_for_loop']}x |")
    la = res.get('layout')
    if la and 'step_s' in la:
        f = lambda s: f"{s['min']:.4f} / {s['median']:.4f} / {s['max']:.4f}"
        L += ['', f"Memory format, SimMIM step on {la['model']}, batch {la['batch']}, {la['img_size']} px (seconds, min / median / max):", '',
              '| part | NCHW | channels-last |', '|---|---|---|',
              f"| whole Trainer step | {f(la['step_s']['step_nchw'])} | {f(la['step_s']['step_channels_last'])} |",
              f"| patch embedding conv, forward + backward | {f(la['conv_s']['patch_embed_nchw'])} | {f(la['conv_s']['patch_embed_channels_last'])} |",
              f"| linear head 1x1 conv, forward + backward | {f(la['conv_s']['head_nchw'])} | {f(la['conv_s']['head_channels_last'])} |",
              '', f"Step NCHW / channels-last: {la['step_nchw_over_channels_last']}x; the two convolutions are "
              f"{100 * la['convs_share_of_step']:.1f}% of the NCHW step."]
    mem = {k: v for k, v in res.items() if k.startswith('memory') and isinstance(v, dict) and 'step_peak_mib' in v}
    if mem:
        L += ['', 'Peak memory of a training step (rise over two steps; CPU: ru_maxrss, CUDA: max_memory_allocated):', '',
              '| method | side | model | batch | step peak MiB | process peak MiB |', '|---|---|---|---|---|---|']
        for v in mem.values():
            L.append(f"| {v['method']} | {v['side']} | {v['model']} | {v['batch']} | {v['step_peak_mib']} | {v['peak_mib']} |")
    errs = {k: v['error'] for k, v in res.items() if isinstance(v, dict) and 'error' in v}
    if errs: L += ['', 'Failed: ' + '; '.join(f"{k}: {e}" for k, e in errs.items())]
    return L

def views_summary(res:dict) -> list[str]:
    "The batched views vs the per-image path vs lightly (bench_views.py), and each against the model's images/s"
    vi = res.get('views')
    if not vi or 'results' not in vi: return []
    L = ['', f"Views (bench_views.py, batch {vi['batch']}, {vi['threads']} thread(s), bundled photos; per core = one "
         f"thread; load average {vi['machine']['load_average'][0]}, {vi.get('machine_after', vi['machine'])['load_average'][0]}):", '',
         '| method | side | samples/s min / med / max | per core (median) | batched / this side (median; pairs min-max) |',
         '|---|---|---|---|---|']
    for method, r in vi['results'].items():
        base = 'batched' if 'batched' in r else 'batched_device'
        for side in ('batched', 'batched_worker', 'batched_device', 'pil', 'lightly', 'batched_arrays', 'batched_worker_arrays',
                     'pil_arrays', 'batched_files', 'batched_worker_files', 'pil_files'):
            if side not in r: continue
            tail = next((t for t in ('_arrays', '_files') if side.endswith(t)), '')
            s, ratio = r[side]['samples_per_s'], r.get(f"ratio_{'batched' + tail if tail else base}_over_{side}")
            rt = f"{ratio['median']:.2f} ({ratio['pairs']['min']:.2f}-{ratio['pairs']['max']:.2f})" if ratio else ''
            L.append(f"| {method} | {side} | {s['min']:.1f} / {s['median']:.1f} / {s['max']:.1f} | "
                     f"{r[side].get('samples_per_s_per_core', '')} | {rt} |")
    rows = []
    for method, keys in (('msn', ('msn_small',)), ('simmim', ('simmim_vit_base', 'simmim'))):
        key = next((k for k in keys if res.get(k, {}).get('results')), keys[-1])
        r, m = vi['results'].get(method), res.get(key, {}).get('results', {})
        if not r or not m: continue
        model = 'vit_base' if 'vit_base' in m else ('vit_small' if 'vit_small' in m else next(iter(m)))
        mv = m[model].get('masklab')
        if not mv: continue
        ips = mv['images_per_s']['median']
        side = 'batched_device' if 'batched_device' in r else 'batched'
        for s in (side, 'pil'):
            v = r[s]['samples_per_s']['median']
            rows.append(f"| {method} {model} | {s} | {v:.1f} | {ips:.2f} | {v / ips:.2f}x |")
    if rows:
        L += ['', 'Views against the model (masklab step, median images/s from the table above; CPU: one core of views, '
              'GPU: the whole device):', '', '| model | views side | views samples/s | model img/s | views / model |',
              '|---|---|---|---|---|'] + rows
    return L

def write_md(path:Path, lines:list[str], command:str):
    text = path.read_text() if path.exists() else '# Bench results\n\n<!-- numbers:start -->\n<!-- numbers:end -->\n'
    block = '<!-- numbers:start -->\n' + f"Command: `{command}`\n\n" + '\n'.join(lines) + '\n<!-- numbers:end -->'
    new = re.sub(r'<!-- numbers:start -->.*?<!-- numbers:end -->', lambda m: block, text, flags=re.S)
    path.write_text(new)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', default=str(HERE / 'results.json'))
    p.add_argument('--md', default=str(HERE / 'RESULTS.md'), help='the RESULTS.md whose numbers section is rewritten')
    p.add_argument('--no-md', action='store_true', help='leave RESULTS.md alone; print the table instead')
    p.add_argument('--quick', action='store_true')
    p.add_argument('--device', default='cpu')
    p.add_argument('--dtype', default='fp32', choices=('fp32', 'bf16'))
    p.add_argument('--threads', type=int, default=0)
    p.add_argument('--only', default='', help='comma-separated keys of the plan (e.g. msn_tiny,simmim,data)')
    p.add_argument('--timeout', type=int, default=600, help='seconds per script')
    a = p.parse_args()
    plan = dict(GPU_ARGS if a.device.startswith('cuda') else CPU_ARGS)
    if a.only: plan = {k: v for k, v in plan.items() if any(k.startswith(o) for o in a.only.split(','))}
    common = ['--device', a.device, '--dtype', a.dtype] + (['--threads', str(a.threads)] if a.threads else []) + \
             (['--quick'] if a.quick else [])
    res, t0 = {}, time.time()
    if a.only and Path(a.out).exists():  # a partial run updates the saved results
        res = {k: v for k, v in json.loads(Path(a.out).read_text()).items() if k != '_run'}
    for k, args in plan.items():
        print(f"[bench] {k}: {' '.join(args)}", file=sys.stderr, flush=True)
        try: res[k] = run_one(args, common, a.timeout)
        except subprocess.TimeoutExpired: res[k] = dict(error=f'timed out after {a.timeout} s')
        print(f"[bench] {k}: {res[k].get('seconds', '')} s {res[k].get('error', '')}", file=sys.stderr, flush=True)
    res['_run'] = dict(command=' '.join(['python bench/run.py', *sys.argv[1:]]), seconds=round(time.time() - t0, 1),
                       keys=list(plan))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    lines = summary(res)
    if a.no_md or a.quick: print('\n'.join(lines))
    else: write_md(Path(a.md), lines, res['_run']['command'])
    print(f"[bench] done in {res['_run']['seconds']} s; JSON in {a.out}", file=sys.stderr)

if __name__ == '__main__': main()
