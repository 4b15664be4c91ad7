#!/usr/bin/env bash
# masklab's GPU check, one command: every figure bench/RESULTS.md's GPU section asks for, in under 8 minutes on one
# H100/H200, into one JSON and one markdown file.
#
#   tools/gpu_check.sh [--out DIR] [--dry-run]      (run from the repository root, in the project's environment)
#
# Steps, each under its own timeout so that one failure does not lose the others (the limits add up to 14.5 minutes;
# the steps' expected times to about 7, an estimate: this script has not yet run on a GPU):
#   1. nbdev-test --flags gpu                     the notebooks with their `#| gpu` cells (08's compile_speed on CUDA)
#   2. masklab pretrain --device cuda, preset tiny, SimMIM and MSN (6 steps each, end-of-run code: model, figures, k-NN)
#   3. 200 steps of the paper presets on the bundled photos: msn-vit-s16-800ep (ViT-S/16, batch 64) and
#      simmim-vit-b16-800ep (ViT-B/16, batch 128), end-of-run code included
#   4. the bench's GPU plan, bf16: MSN ViT-S/16 batch 64 and SimMIM ViT-B/16 (and Swin-B/192) batch 128, eager and
#      compiled, and the batched views on the GPU (bench/run.py --device cuda --dtype bf16 --only msn_small,simmim,views)
#   5. the report: DIR/gpu_check.json (every step's command, exit code, seconds, output tail; the bench results;
#      MFU against the card's bf16 dense peak and against the measured bf16 matmul rate; views / model images/s)
#      and DIR/gpu_check.md (the same as tables, ready for bench/RESULTS.md).
#
# --dry-run runs the same steps on the CPU at toy sizes (about 8 minutes on a busy 2-core machine): it checks that
# every command and the report work without a GPU. Step 1 is then skipped (the `#| gpu` cells need CUDA), and the
# bench runs its `views` entry only (the step entries compile, which takes minutes on a CPU). Set
# MASKLAB_PEAK_TFLOPS to the card's bf16 dense peak if its name is not in the table in step 5.
set -u
cd "$(dirname "$0")/.."
OUT=bench/gpu_check; DRY=0; SCALE=1
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="$2"; shift 2 ;;
        --dry-run) DRY=1; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "gpu_check: unknown argument $1 (use --out DIR, --dry-run)" >&2; exit 2 ;;
    esac
done
PY=${PYTHON:-python}
mkdir -p "$OUT/logs" "$OUT/runs"
STEPS="$OUT/steps.jsonl"; : > "$STEPS"
T0=$(date +%s)

step() {  # step NAME TIMEOUT_S COMMAND...: run it, log it, record rc and seconds; never stops the script
    local name=$1 limit=$(( $2 * SCALE )); shift 2
    local log="$OUT/logs/$name.log" t=$(date +%s)
    echo "[gpu_check] $name (timeout ${limit}s): $*" >&2
    timeout --kill-after=10 "$limit" "$@" > "$log" 2>&1
    local rc=$? s=$(( $(date +%s) - t ))
    echo "[gpu_check] $name: rc=$rc, ${s}s" >&2
    "$PY" - "$STEPS" "$name" "$rc" "$s" "$log" "$limit" "$*" <<'EOF'
import json, sys
path, name, rc, s, log, limit, cmd = sys.argv[1:]
tail = open(log, errors='replace').read()[-3000:]
with open(path, 'a') as f:
    f.write(json.dumps(dict(step=name, command=cmd, rc=int(rc), seconds=int(s), timeout_s=int(limit),
                            timed_out=int(rc) in (124, 137), log=log, output_tail=tail)) + '\n')
EOF
}
skip() { "$PY" -c "import json,sys; open(sys.argv[1],'a').write(json.dumps(dict(step=sys.argv[2], skipped=sys.argv[3]))+'\n')" "$STEPS" "$1" "$2"; }

if [ $DRY = 1 ]; then
    DEV=cpu; DTYPE=fp32; QUICK=--quick; SCALE=4; ONLY=views  # a CPU is slower: four times each limit; no compiling
    PAPER_S=(--max-steps 2 --batch-size 4 --set img_size=64 --set num_workers=0 --set model.views.rand_size=64 --set model.views.focal_size=32)
    PAPER_B=(--max-steps 2 --batch-size 4 --set img_size=64 --set num_workers=0)
    skip nbdev_test_gpu "--dry-run: the #| gpu cells need CUDA"
else
    DEV=cuda; DTYPE=bf16; QUICK=; ONLY=msn_small,simmim,views
    PAPER_S=(--max-steps 200 --batch-size 64 --set num_workers=12 --set save_every=0)
    PAPER_B=(--max-steps 200 --batch-size 128 --set num_workers=12 --set save_every=0)
    step nbdev_test_gpu 150 nbdev-test --flags gpu
fi

for m in simmim msn; do
    step "pretrain_tiny_$m" 60 masklab pretrain --preset tiny --method "$m" --device "$DEV" --no-progress \
        --out "$OUT/runs/tiny-$m"
done
rm -rf "$OUT/runs/msn-vit-s16" "$OUT/runs/simmim-vit-b16"
step pretrain_msn_vit_s16 90 masklab pretrain --preset msn-vit-s16-800ep --data photos --device "$DEV" --no-progress \
    "${PAPER_S[@]}" --out "$OUT/runs/msn-vit-s16"
step pretrain_simmim_vit_b16 90 masklab pretrain --preset simmim-vit-b16-800ep --data photos --device "$DEV" --no-progress \
    "${PAPER_B[@]}" --out "$OUT/runs/simmim-vit-b16"
step bench_gpu_plan 420 "$PY" bench/run.py --device "$DEV" --dtype "$DTYPE" $QUICK --only "$ONLY" \
    --timeout 200 --out "$OUT/results_gpu.json" --no-md
echo "[gpu_check] report ($(( $(date +%s) - T0 ))s so far)" >&2

"$PY" - "$OUT" "$DRY" "$(( $(date +%s) - T0 ))" <<'EOF'
import json, os, sys
from pathlib import Path
out, dry, total = Path(sys.argv[1]), sys.argv[2] == '1', int(sys.argv[3])
sys.path.insert(0, 'bench')
steps = [json.loads(l) for l in (out / 'steps.jsonl').read_text().splitlines() if l.strip()]
PEAKS = {'H200': 989e12, 'H100 SXM': 989e12, 'H100 80GB HBM3': 989e12, 'H100 NVL': 835e12, 'H100 PCIe': 756e12,
         'A100': 312e12, 'L40S': 362e12}  # bf16 dense tensor-core peaks from the vendors' data sheets, FLOP/s
res = json.loads((out / 'results_gpu.json').read_text()) if (out / 'results_gpu.json').exists() else {}
name = next((v['machine']['device_name'] for v in res.values() if isinstance(v, dict) and 'machine' in v), '')
peak = float(os.environ['MASKLAB_PEAK_TFLOPS']) * 1e12 if os.environ.get('MASKLAB_PEAK_TFLOPS') else \
    next((p for k, p in PEAKS.items() if k in name), None)
mfu = []
for key in ('msn_small', 'simmim'):
    for model, r in res.get(key, {}).get('results', {}).items():
        for side in ('masklab', 'masklab_compiled', 'lightly'):
            s = r.get(side)
            if not s: continue
            med = s['step_s']['median']
            mfu.append(dict(step=res[key]['bench'], model=model, batch=res[key]['batch'], side=side,
                            images_per_s=s['images_per_s']['median'], tflop_per_step=round(s['flops']['total'] / 1e12, 3),
                            mfu_vs_card_peak=round(s['flops']['total'] / med / peak, 4) if peak else None,
                            mfu_vs_measured_matmul=s['mfu']))
summary = []
try:
    import run
    summary = run.summary(res) if res else []
except Exception as e: summary = [f'(bench summary failed: {e})']
runs = {}
for f in sorted((out / 'runs').glob('*/summary.json')):
    s = json.loads(f.read_text())
    runs[f.parent.name] = {k: s.get(k) for k in ('steps', 'total_steps', 'first_loss', 'final_loss', 'stopped', 'knn')}
report = dict(dry_run=dry, total_seconds=total, device_name=name, bf16_peak_flops=peak, steps=steps, runs=runs, mfu=mfu,
              bench=res)
(out / 'gpu_check.json').write_text(json.dumps(report, indent=1))
L = [f"# GPU check{' (dry run on the CPU: toy sizes, the numbers mean nothing)' if dry else ''}", '',
     f"{name or 'no bench device recorded'}; bf16 dense peak used for MFU: {peak / 1e12 if peak else 'unknown'} TFLOP/s; "
     f"{total} s in all.", '', '| step | exit | seconds (limit) | command |', '|---|---|---|---|']
for s in steps:
    if 'skipped' in s: L.append(f"| {s['step']} | skipped | | {s['skipped']} |"); continue
    L.append(f"| {s['step']} | {s['rc']}{' (timed out)' if s['timed_out'] else ''} | {s['seconds']} ({s['timeout_s']}) | `{s['command']}` |")
if runs:
    L += ['', '| run | steps | first loss | final loss | stopped | k-NN |', '|---|---|---|---|---|---|']
    for k, v in runs.items():
        knn = (v.get('knn') or {}).get('accuracy')
        L.append(f"| {k} | {v['steps']} | {v['first_loss']} | {v['final_loss']} | {v['stopped']} | {'' if knn is None else round(knn, 3)} |")
if mfu:
    L += ['', '| step | model | batch | side | img/s (median) | TFLOP/step | MFU vs card bf16 peak | MFU vs measured bf16 matmul |',
          '|---|---|---|---|---|---|---|---|']
    for m in mfu:
        card = f"{100 * m['mfu_vs_card_peak']:.1f}%" if m['mfu_vs_card_peak'] is not None else 'set MASKLAB_PEAK_TFLOPS'
        L.append(f"| {m['step']} | {m['model']} | {m['batch']} | {m['side']} | {m['images_per_s']:.1f} | {m['tflop_per_step']} | "
                 f"{card} | {100 * m['mfu_vs_measured_matmul']:.1f}% |")
L += ['', 'bench/run.py summary of the same results:', ''] + summary
(out / 'gpu_check.md').write_text('\n'.join(L) + '\n')
print(f"[gpu_check] wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}", file=sys.stderr)
EOF
echo "[gpu_check] done in $(( $(date +%s) - T0 ))s; failed steps: $(grep -c '"rc": [1-9]' "$STEPS" || true)" >&2
