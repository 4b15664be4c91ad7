"""Helpers shared by the bench scripts: machine facts, A/B alternation, FLOP counting, the fp32 matmul peak.

Every bench script prints one JSON object; `machine()` goes into each so a number never loses its context
(load average and threads: a busy 2-core CPU distorts every timing).
"""
import os, platform, statistics, sys, time, datetime
from pathlib import Path
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count, sdpa_backward_flop_count

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))  # run from a checkout without installing

def add_common_args(p):
    "Arguments every bench script takes"
    p.add_argument('--device', default='cpu', help="cpu | cuda")
    p.add_argument('--dtype', default='fp32', choices=('fp32', 'bf16'), help="fp32, or bf16 autocast (CUDA)")
    p.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: torch default)')
    p.add_argument('--repeats', type=int, default=5, help='timed steps per side')
    p.add_argument('--warmup', type=int, default=1, help='untimed steps per side first')
    p.add_argument('--quick', action='store_true', help='tiny sizes: checks the script runs, numbers mean little')
    p.add_argument('--compile', action='store_true', help="also time masklab with Trainer(compile=True) as a third side, "
                   "masklab_compiled (lightly stays eager; compiling happens in the untimed warmup, at least 3 steps)")
    return p

def setup(a) -> torch.device:
    "Apply threads and seed; return the device"
    if a.threads: torch.set_num_threads(a.threads)
    if getattr(a, 'compile', False): a.warmup = max(a.warmup, 3)  # MSN's views compile a graph per shape in the first steps
    torch.manual_seed(0)
    dev = torch.device(a.device)
    if dev.type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = a.dtype != 'fp32'
        torch.backends.cudnn.allow_tf32 = a.dtype != 'fp32'
    return dev

def machine(dev=None) -> dict:
    "Where and under what load a number was taken"
    dev = torch.device(dev or 'cpu')
    name = (torch.cuda.get_device_name(dev) if dev.type == 'cuda'
            else f"{platform.processor() or platform.machine()} {os.cpu_count()} cores, {torch.backends.cpu.get_cpu_capability()}")
    return dict(date=datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'), device=str(dev),
                device_name=name, torch=torch.__version__, threads=torch.get_num_threads(),
                load_average=[round(x, 2) for x in os.getloadavg()], python=platform.python_version())

def sync(dev):
    if torch.device(dev).type == 'cuda': torch.cuda.synchronize(dev)

def stats(times) -> dict:
    "min / median / max of a list of seconds"
    return dict(min=round(min(times), 5), median=round(statistics.median(times), 5), max=round(max(times), 5), n=len(times))

def alternate(fns:dict, dev, repeats:int, warmup:int=1) -> dict:
    """Time each callable of `fns` A B A B ...: after `warmup` untimed calls each, `repeats` timed rounds; seconds per
    call. Each round starts one side later (A B C, B C A, C A B, ...), so no side always runs right after the same
    neighbour (a matmul that leaves the cores hot, a side whose allocations the next one pays for)"""
    for _ in range(warmup):
        for f in fns.values(): f()
    sync(dev)
    times, keys = {k: [] for k in fns}, list(fns)
    for r in range(repeats):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            sync(dev); t0 = time.perf_counter(); fns[k](); sync(dev); times[k].append(time.perf_counter() - t0)
    return times

def throughput(times, images:int) -> dict:
    "images/s from step times: min/median/max (the fastest step gives the max)"
    return dict(min=round(images / max(times), 3), median=round(images / statistics.median(times), 3),
                max=round(images / min(times), 3))

def _sdpa_fwd(q, k, v, *args, out_shape=None, **kw): return sdpa_flop_count(q, k, v)
def _sdpa_bwd(g, q, k, v, *args, out_shape=None, **kw): return sdpa_backward_flop_count(g, q, k, v)
_CPU_SDPA = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_fwd,
             torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_bwd}

def flop_counter() -> FlopCounterMode:
    "torch's FlopCounterMode, plus the CPU flash-attention kernels it does not count by itself"
    return FlopCounterMode(display=False, custom_mapping=_CPU_SDPA)

def count_flops(fn) -> int:
    "FLOPs (matmuls, convolutions, attention; 2 per multiply-add) that `fn()` runs"
    with flop_counter() as fc: fn()
    return int(fc.get_total_flops())

def matmul_peak(dev, dtype=torch.float32, n:int=2048, repeats:int=5) -> dict:
    "The measured matmul rate of this device: the best of `repeats` (n x n) @ (n x n) products, in FLOP/s"
    a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
    for _ in range(2): a @ b
    sync(dev)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter(); a @ b; sync(dev); times.append(time.perf_counter() - t0)
    flops = 2 * n ** 3
    return dict(n=n, dtype=str(dtype).replace('torch.', ''), flops_per_s=round(flops / min(times)),
                median_flops_per_s=round(flops / statistics.median(times)))

def matmul_fn(dev, dtype=torch.float32, n:int=2048, reps:int=3):
    "A callable doing `reps` (n x n) @ (n x n) products, to time in the same A B A B rounds as the steps, and its FLOPs"
    a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
    def f():
        for _ in range(reps): a @ b
    return f, 2 * n ** 3 * reps

def interleaved_peak(times, flops:int, n:int, dtype) -> dict:
    "The matmul rate from the rounds timed between the steps: best and median, FLOP/s"
    return dict(n=n, dtype=str(dtype).replace('torch.', ''), flops_per_s=round(flops / min(times)),
                median_flops_per_s=round(flops / statistics.median(times)), interleaved=True)

def autocast(dev, dtype:str):
    "bf16 autocast when asked for, else a no-op context"
    from contextlib import nullcontext
    return torch.autocast(torch.device(dev).type, dtype=torch.bfloat16) if dtype == 'bf16' else nullcontext()

def side_by_side(times:dict, flops:dict, batch:int, peak:dict) -> dict:
    "Each side's step times, images/s, FLOPs and MFU (against the best and the median matmul rate), and the ratio"
    r = dict(matmul_peak=peak)
    for k, t in times.items():
        med, total = stats(t)['median'], flops[k]['total'] if isinstance(flops[k], dict) else flops[k]
        r[k] = dict(step_s=stats(t), images_per_s=throughput(t, batch),
                    flops=flops[k] if isinstance(flops[k], dict) else dict(total=total),
                    mfu=round(total / med / peak['flops_per_s'], 4),
                    mfu_at_median_peak=round(total / med / peak['median_flops_per_s'], 4))
    if 'masklab' in r and 'lightly' in r:
        r['ratio_masklab_over_lightly'] = dict(
            median=round(r['masklab']['images_per_s']['median'] / r['lightly']['images_per_s']['median'], 3),
            pairs=stats([tl / tm for tm, tl in zip(times['masklab'], times['lightly'])]))
    for other in ('lightly', 'masklab'):  # what compiling buys, against each eager side
        if 'masklab_compiled' in r and other in r:
            r[f'ratio_masklab_compiled_over_{other}'] = dict(
                median=round(r['masklab_compiled']['images_per_s']['median'] / r[other]['images_per_s']['median'], 3),
                pairs=stats([to / tc for tc, to in zip(times['masklab_compiled'], times[other])]))
    return r

def time_sides(steps:dict, flops:dict, batch:int, dev, a, out:dict) -> dict:
    "Time each side's step A B A B with a matmul in every round (the machine's rate, measured alongside); their results"
    mm_dtype, mm_n = (torch.bfloat16 if a.dtype == 'bf16' else torch.float32), (512 if a.quick else 2048)
    mm, mm_flops = matmul_fn(dev, mm_dtype, mm_n)
    times = alternate({**steps, 'matmul': mm}, dev, a.repeats, a.warmup)
    peak = out['matmul_peak'] = interleaved_peak(times.pop('matmul'), mm_flops, mm_n, mm_dtype)
    out['machine_after'] = machine(dev)
    return side_by_side(times, flops, batch, peak)
