"""One SimMIM training step, masklab against lightly, side by side (A B A B) on the same machine; prints JSON.

    python bench/bench_simmim.py [--models vit_tiny] [--batch 16] [--img-size 224] [--repeats 5] [--quick] [--compile]
    python bench/bench_simmim.py --models swin_base --img-size 192 --sides masklab   # Swin-B, masklab only

Same work on both sides: the same timm ViT/16 with a mask token, batch, images and the same masks (SimMIM's random
32 px units at ratio 0.6: 30 of 49 units, 120 of 196 tokens, made once for the batch in masklab's data pipeline
and handed to both), L1 loss on the masked pixels, AdamW, grad-norm clip 5, fp32 (bf16 autocast on CUDA with
--dtype bf16), the same torch threads. MFU as in bench_msn.py (matmul rate timed in the same rounds).
- masklab: `masklab.trainer.Trainer.train_step` (the step `masklab pretrain` takes) on `masklab.simmim.SimMIM`
  (linear head: 1x1 conv + PixelShuffle on every token, loss on the masked pixels, as official);
- lightly: its SimMIM example's pieces: `MaskedVisionTransformerTIMM.encode(idx_mask=...)`, a Linear decoder on the
  masked tokens only, `patchify` targets and `nn.L1Loss` (the head is ~0.1% of the FLOPs either way).
Swin models (`swin_base`: SimMIM's Swin-B, window 6 at 192 px; `swin_micro`: a 4-block toy for --quick) run on the
masklab side only: lightly has no Swin with a mask token (its SimMIM example is ViT-only).
--compile adds a third side, `masklab_compiled`: the same Trainer step with `compile=True`, the same FLOPs.
"""
import argparse, itertools, json
import torch
from torch import nn
from common import add_common_args, setup, machine, count_flops, autocast, time_sides

VITS = {'vit_tiny': dict(embed_dim=192, depth=12, num_heads=3), 'vit_small': dict(embed_dim=384, depth=12, num_heads=6),
        'vit_base': dict(embed_dim=768, depth=12, num_heads=12), 'vit_micro': dict(embed_dim=64, depth=2, num_heads=2)}
SWINS = {'swin_base': 'simmim_swin_base', 'swin_micro': 'simmim_swin_tiny'}  # masklab encoder presets (patch 4)

def patch_size(model_name): return 4 if model_name in SWINS else 16

def make_encoder(model_name, size):
    "masklab's encoder for a bench model name: a ViT/16 of VITS, or a Swin preset of SWINS"
    from masklab.encoders import MaskTokenViT, create_encoder
    if model_name in SWINS: return create_encoder(SWINS[model_name], img_size=size)
    return MaskTokenViT('vit_tiny_patch16_224', img_size=size, patch_size=16, **VITS[model_name])

def make_batch(B, size, patch, unit, ratio, dev):
    from masklab.masking import random_unit_masks
    g = torch.Generator().manual_seed(0)
    return dict(image=torch.randn(B, 3, size, size, generator=g).to(dev),
                mask=random_unit_masks(B, size, unit, patch, ratio, generator=g).to(dev))

def masklab_step(model_name, batch, dev, dtype, unit, ratio, encoder=None, compile=False):
    "masklab's SimMIM and its Trainer; returns (step fn, fwd+bwd fn, model)"
    from masklab.simmim import SimMIM
    from masklab.trainer import Trainer
    torch.manual_seed(0)
    B, size = batch['image'].shape[0], batch['image'].shape[-1]
    enc = encoder or make_encoder(model_name, size)
    model = SimMIM(enc, 'linear', unit, ratio)
    trainer = Trainer(model, [0] * B, batch_size=B, max_steps=10 ** 6, device=str(dev),
                      precision='bf16' if dtype == 'bf16' else 'fp32', optim=dict(clip_grad=5.0),
                      schedule=dict(name='cosine', lr=1e-4, weight_decay=0.05), progress=False, log_every=10 ** 6,
                      compile=compile)
    it = itertools.repeat(batch)
    def fwd_bwd():
        with autocast(dev, dtype): loss = model(batch)['loss']
        loss.backward(); model.zero_grad(set_to_none=True)
    return (lambda: trainer.train_step(it)), fwd_bwd, model

def lightly_step(model_name, batch, dev, dtype):
    "lightly's SimMIM example's pieces, fed masklab's masks; returns (step fn, fwd+bwd fn, modules)"
    import timm
    from lightly.models import utils
    from lightly.models.modules import MaskedVisionTransformerTIMM
    torch.manual_seed(0)
    x, mask = batch['image'], batch['mask']
    B, size = x.shape[0], x.shape[-1]
    vit = timm.create_model('vit_tiny_patch16_224', pretrained=False, num_classes=0, img_size=size, patch_size=16,
                            **VITS[model_name])
    backbone = MaskedVisionTransformerTIMM(vit=vit).to(dev)
    decoder = nn.Linear(vit.embed_dim, 16 * 16 * 3).to(dev)
    crit = nn.L1Loss()
    params = list(backbone.parameters()) + list(decoder.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05)
    idx_mask = mask.flatten(1).nonzero()[:, 1].reshape(B, -1) + 1  # +1: after [CLS]; every image masks as many tokens
    def forward():
        tokens = backbone.encode(images=x, idx_mask=idx_mask)
        pred = decoder(utils.get_at_index(tokens, idx_mask))
        target = utils.get_at_index(utils.patchify(x, 16), idx_mask - 1)
        return crit(pred, target)
    def step():
        with autocast(dev, dtype): loss = forward()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 5.0)
        opt.step(); opt.zero_grad(set_to_none=True)
        return loss.item()
    def fwd_bwd():
        with autocast(dev, dtype): loss = forward()
        loss.backward(); opt.zero_grad(set_to_none=True)
    return step, fwd_bwd, (backbone, decoder)

def main():
    p = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    p.add_argument('--models', default=None, help=f"comma-separated, of {', '.join([*VITS, *SWINS])} (default vit_tiny)")
    p.add_argument('--batch', type=int, default=16)
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument('--mask-patch-size', type=int, default=32)
    p.add_argument('--mask-ratio', type=float, default=0.6)
    p.add_argument('--sides', default='masklab,lightly')
    a = p.parse_args()
    if a.quick:  # toy sizes; a Swin asked for stays a Swin
        a.models = 'swin_micro' if a.models and a.models.startswith('swin') else 'vit_micro'
        a.batch, a.img_size, a.repeats = 2, 64, 2
    a.models = a.models or 'vit_tiny'
    for name in a.models.split(','):
        if name not in VITS and name not in SWINS: p.error(f"--models: unknown {name!r}; known: {', '.join([*VITS, *SWINS])}")
    dev = setup(a)
    out = dict(bench='simmim_step', machine=machine(dev), dtype=a.dtype, batch=a.batch, img_size=a.img_size,
               mask_patch_size=a.mask_patch_size, mask_ratio=a.mask_ratio, repeats=a.repeats, results={})
    for name in a.models.split(','):
        batch = make_batch(a.batch, a.img_size, patch_size(name), a.mask_patch_size, a.mask_ratio, dev)
        sides = {}
        if 'masklab' in a.sides: sides['masklab'] = masklab_step(name, batch, dev, a.dtype, a.mask_patch_size, a.mask_ratio)
        if 'lightly' in a.sides and name not in SWINS: sides['lightly'] = lightly_step(name, batch, dev, a.dtype)
        flops = {k: count_flops(v[1]) for k, v in sides.items()}
        if a.compile and 'masklab' in sides:  # the same work (its FLOPs are the eager side's), compiled blocks
            sides['masklab_compiled'] = masklab_step(name, batch, dev, a.dtype, a.mask_patch_size, a.mask_ratio, compile=True)
            flops['masklab_compiled'] = flops['masklab']
        r = time_sides({k: v[0] for k, v in sides.items()}, flops, a.batch, dev, a, out)
        out['results'][name] = r
        out['masked_tokens_per_image'] = int(batch['mask'][0].sum())
    print(json.dumps(out, indent=1))

if __name__ == '__main__': main()
