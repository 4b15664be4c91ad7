"""How masklab's step time scales: MSN's masked anchor against the drop ratio, SimMIM against the image size; JSON.

    python bench/bench_scaling.py [--msn-model vit_small] [--drops 0,0.15,0.5,0.7] [--sizes 96,160,224] [--quick]

- `drop`: the online encoder + projection head, forward and backward, on one batch of 224 anchors with MSN's token
  drop at each ratio (the ratios are timed A B C D A B C D ...). If dropped tokens cost nothing, the time is in
  proportion to the tokens kept: `time_over_time_at_0` should track `kept_fraction` (attention grows with the
  square of the tokens, so it falls a little faster; fixed costs such as the head make it fall a little slower).
- `size`: the full SimMIM training step (Trainer.train_step) at each image size; time should track the tokens.
"""
import argparse, json
import torch
from common import add_common_args, setup, machine, alternate, stats, count_flops, autocast
import bench_msn, bench_simmim

def main():
    p = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    p.add_argument('--msn-model', default='vit_small')
    p.add_argument('--msn-batch', type=int, default=16)
    p.add_argument('--drops', default='0,0.15,0.5,0.7')
    p.add_argument('--simmim-model', default='vit_tiny')
    p.add_argument('--simmim-batch', type=int, default=16)
    p.add_argument('--sizes', default='96,160,224')
    a = p.parse_args()
    if a.quick: a.msn_model, a.simmim_model, a.msn_batch, a.simmim_batch, a.sizes, a.repeats = 'vit_micro', 'vit_micro', 2, 2, '64,96', 2
    dev = setup(a)
    out = dict(bench='scaling', machine=machine(dev), dtype=a.dtype, repeats=a.repeats)

    # MSN: the masked anchor alone, at each drop ratio
    from masklab.encoders import TokenDropViT
    from masklab.msn import MSN
    size = 64 if a.quick else 224
    torch.manual_seed(0)
    model = MSN(TokenDropViT('vit_small_patch16_224', img_size=size, patch_size=16, **bench_msn.VITS[a.msn_model])).to(dev)
    x = torch.randn(a.msn_batch, 3, size, size, device=dev)
    N = (size // 16) ** 2
    def anchor(drop):
        def f():
            with autocast(dev, a.dtype): z = model.encoder(x, patch_drop=drop)
            z.float().pow(2).mean().backward()
            model.zero_grad(set_to_none=True)
        return f
    drops = [float(d) for d in a.drops.split(',')]
    fns = {d: anchor(d) for d in drops}
    times = alternate(fns, dev, a.repeats, a.warmup)
    flops = {d: count_flops(fns[d]) for d in drops}
    t0 = stats(times[drops[0]])['median']
    out['drop'] = dict(model=a.msn_model, batch=a.msn_batch, img_size=size, patch_tokens=N, rows=[
        dict(patch_drop=d, kept_tokens=int(N * (1 - d)) if d > 0 else N, kept_fraction=round((int(N * (1 - d)) if d > 0 else N) / N, 3),
             step_s=stats(times[d]), time_over_time_at_0=round(stats(times[d])['median'] / t0, 3),
             flops=flops[d], flops_over_flops_at_0=round(flops[d] / flops[drops[0]], 3)) for d in drops])

    # SimMIM: the full training step at each image size
    sizes = [int(s) for s in a.sizes.split(',')]
    steps, fl = {}, {}
    for s in sizes:
        batch = bench_simmim.make_batch(a.simmim_batch, s, 16, 32 if s % 32 == 0 else 16, 0.6, dev)
        step, fwd_bwd, _ = bench_simmim.masklab_step(a.simmim_model, batch, dev, a.dtype, 32 if s % 32 == 0 else 16, 0.6)
        steps[s], fl[s] = step, count_flops(fwd_bwd)
    times = alternate(steps, dev, a.repeats, a.warmup)
    t0 = stats(times[sizes[-1]])['median']
    out['size'] = dict(model=a.simmim_model, batch=a.simmim_batch, rows=[
        dict(img_size=s, tokens=(s // 16) ** 2, token_fraction=round((s // 16) ** 2 / (sizes[-1] // 16) ** 2, 3),
             step_s=stats(times[s]), time_over_time_at_largest=round(stats(times[s])['median'] / t0, 3),
             images_per_s=round(a.simmim_batch / stats(times[s])['median'], 3), flops=fl[s]) for s in sizes])
    print(json.dumps(out, indent=1))

if __name__ == '__main__': main()
