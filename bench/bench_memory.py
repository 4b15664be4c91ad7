"""Peak memory of one training step, for one side (masklab or lightly) and one method, in a fresh process; JSON.

    python bench/bench_memory.py --method msn|simmim --side masklab|lightly [--model vit_small] [--batch 8] [--quick]

CPU: the rise of the process's peak resident set (ru_maxrss) over two steps, above what the built model and
batch already hold. CUDA: torch.cuda.max_memory_allocated over two steps, above the memory allocated before them.
One process per measurement (bench/run.py starts them), since a process's peak never comes down.
"""
import argparse, json, resource
import torch
from common import add_common_args, setup, machine
import bench_msn, bench_simmim

def rss_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB

def main():
    p = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    p.add_argument('--method', choices=('msn', 'simmim'), required=True)
    p.add_argument('--side', choices=('masklab', 'lightly'), required=True)
    p.add_argument('--model', default=None)
    p.add_argument('--batch', type=int, default=8)
    a = p.parse_args()
    dev = setup(a)
    model = a.model or ('vit_small' if a.method == 'msn' else 'vit_tiny')
    if a.quick: model, a.batch = 'vit_micro', 2
    if a.method == 'msn':
        batch = (bench_msn.make_batch(a.batch, 64, 32, 2, dev) if a.quick else bench_msn.make_batch(a.batch, 224, 96, 10, dev))
        step = (bench_msn.masklab_step(model, a.batch, batch, dev, a.dtype, 0.15) if a.side == 'masklab'
                else bench_msn.lightly_step(model, a.batch, batch, dev, a.dtype, 0.15))[0]
    else:
        batch = bench_simmim.make_batch(a.batch, 64 if a.quick else 224, 16, 32, 0.6, dev)
        step = (bench_simmim.masklab_step(model, batch, dev, a.dtype, 32, 0.6) if a.side == 'masklab'
                else bench_simmim.lightly_step(model, batch, dev, a.dtype))[0]
    if dev.type == 'cuda':
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); before = torch.cuda.memory_allocated() / 2 ** 20
    else: before = rss_peak_mib()
    for _ in range(2): step()
    if dev.type == 'cuda':
        torch.cuda.synchronize(); peak = torch.cuda.max_memory_allocated() / 2 ** 20
    else: peak = rss_peak_mib()
    print(json.dumps(dict(bench='memory', machine=machine(dev), method=a.method, side=a.side, model=model, batch=a.batch,
                          dtype=a.dtype, measure='cuda max_memory_allocated' if dev.type == 'cuda' else 'ru_maxrss',
                          before_mib=round(before, 1), peak_mib=round(peak, 1), step_peak_mib=round(peak - before, 1)), indent=1))

if __name__ == '__main__': main()
