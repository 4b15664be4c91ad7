"""Does channels-last help? The SimMIM training step with NCHW vs channels-last images and conv weights, A B A B;
prints JSON.

    python bench/bench_layout.py [--model vit_tiny] [--batch 16] [--img-size 224] [--repeats 5] [--quick]

A ViT touches the image layout in two places only: the patch embedding (a stride-16 conv over the image) and, in
SimMIM, the linear head (a 1x1 conv on the token map, then PixelShuffle). Everything between them is (B, tokens, C)
matmuls that have no memory format. So channels-last can change at most those two convolutions; this script times
them alone in both layouts (forward + backward) and the whole Trainer step in both layouts, and reports the
convolutions' share of the step, which bounds what the layout can buy.
"""
import argparse, json
import torch
from common import add_common_args, setup, machine, alternate, stats, throughput
from bench_simmim import make_batch, masklab_step

def conv_fwd_bwd(conv, x):
    "forward + backward through one convolution (its weight gradient, as in training)"
    def f():
        conv(x).sum().backward()
        conv.zero_grad(set_to_none=True)
    return f

def main():
    p = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    p.add_argument('--model', default='vit_tiny')
    p.add_argument('--batch', type=int, default=16)
    p.add_argument('--img-size', type=int, default=224)
    a = p.parse_args()
    if a.quick: a.model, a.batch, a.img_size, a.repeats = 'vit_micro', 2, 64, 2
    dev = setup(a)
    cl = torch.channels_last
    batch = make_batch(a.batch, a.img_size, 16, 32, 0.6, dev)
    batch_cl = dict(batch, image=batch['image'].contiguous(memory_format=cl))
    step, _, model = masklab_step(a.model, batch, dev, a.dtype, 32, 0.6)
    step_cl, _, model_cl = masklab_step(a.model, batch_cl, dev, a.dtype, 32, 0.6)
    model_cl.to(memory_format=cl)  # in place: the Trainer's optimizer keeps the same parameters
    assert model_cl.encoder.patch_embed.proj.weight.is_contiguous(memory_format=cl)
    pe, pe_cl = model.encoder.patch_embed.proj, model_cl.encoder.patch_embed.proj
    x = batch['image']
    tokens = torch.randn(a.batch, model.encoder.embed_dim, a.img_size // 16, a.img_size // 16, device=dev)
    head, head_cl = model.head.proj, model_cl.head.proj
    times = alternate({'step_nchw': step, 'step_channels_last': step_cl,
                       'patch_embed_nchw': conv_fwd_bwd(pe, x), 'patch_embed_channels_last': conv_fwd_bwd(pe_cl, batch_cl['image']),
                       'head_nchw': conv_fwd_bwd(head, tokens),
                       'head_channels_last': conv_fwd_bwd(head_cl, tokens.contiguous(memory_format=cl))},
                      dev, a.repeats, a.warmup)
    med = {k: stats(t)['median'] for k, t in times.items()}
    out = dict(bench='layout', machine=machine(dev), model=a.model, batch=a.batch, img_size=a.img_size, dtype=a.dtype,
               step_s={k: stats(times[k]) for k in ('step_nchw', 'step_channels_last')},
               images_per_s={k: throughput(times[k], a.batch) for k in ('step_nchw', 'step_channels_last')},
               conv_s={k: stats(t) for k, t in times.items() if not k.startswith('step')},
               step_nchw_over_channels_last=round(med['step_nchw'] / med['step_channels_last'], 3),
               convs_share_of_step=round((med['patch_embed_nchw'] + med['head_nchw']) / med['step_nchw'], 4),
               machine_after=machine(dev))
    print(json.dumps(out, indent=1))

if __name__ == '__main__': main()
