"""The optimizer step alone, torch's AdamW for-loop against fused, on masklab's MSN or SimMIM parameters; JSON.

    python bench/bench_optim.py [--model vit_small] [--repeats 5] [--quick]

The Trainer uses fused AdamW on CPU and CUDA (`optim=dict(fused=None)`, the default); this is the before/after of
that change, A B A B: the same parameters and gradients, `foreach=False` (torch's CPU default before) vs `fused=True`.
"""
import argparse, json
import torch
from common import add_common_args, setup, machine, alternate, stats
import bench_msn

def main():
    p = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    p.add_argument('--model', default='vit_small')
    a = p.parse_args()
    if a.quick: a.model, a.repeats = 'vit_micro', 2
    dev = setup(a)
    from masklab.encoders import TokenDropViT
    from masklab.msn import MSN
    from masklab.trainer import param_groups
    model = MSN(TokenDropViT('vit_small_patch16_224', img_size=224, patch_size=16, **bench_msn.VITS[a.model])).to(dev)
    for q in model.parameters():
        if q.requires_grad: q.grad = torch.randn_like(q) * 1e-3
    opts = {'for_loop': torch.optim.AdamW(param_groups(model, 0.04), lr=1e-6, foreach=False),
            'foreach': torch.optim.AdamW(param_groups(model, 0.04), lr=1e-6, foreach=True),
            'fused': torch.optim.AdamW(param_groups(model, 0.04), lr=1e-6, fused=True)}
    times = alternate({k: o.step for k, o in opts.items()}, dev, a.repeats, a.warmup)
    n = sum(q.numel() for q in model.parameters() if q.requires_grad)
    print(json.dumps(dict(bench='optim', machine=machine(dev), model=f'MSN {a.model} (encoder + head + prototypes)',
                          parameters=n, step_s={k: stats(t) for k, t in times.items()},
                          fused_speedup_over_for_loop=round(stats(times['for_loop'])['median'] / stats(times['fused'])['median'], 2)),
                     indent=1))

if __name__ == '__main__': main()
