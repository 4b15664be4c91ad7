"""One MSN training step, masklab against lightly, side by side (A B A B) on the same machine; prints JSON.

    python bench/bench_msn.py [--models vit_tiny,vit_small] [--batch 8] [--repeats 5] [--quick] [--compile]

Same work on both sides: the same timm ViT/16, batch, views (1 target + 1 masked 224 anchor + 10 focal 96 views),
token drop (official patch_drop 0.15: 166 of 196 patch tokens kept, plus [CLS]), projection head (2048-2048-256),
1024 prototypes, loss (tau 0.1, T 0.25, 3 Sinkhorn iterations, ME-MAX), AdamW, grad-norm clip 3 on the encoder,
EMA of the target, fp32 (or bf16 autocast on CUDA with --dtype bf16), the same torch threads.
- masklab: `masklab.trainer.Trainer.train_step` (the step `masklab pretrain` takes) on `masklab.msn.MSN`;
- lightly: `MaskedVisionTransformerTIMM` + `MSNProjectionHead` + `MSNLoss` + `random_token_mask` +
  `update_momentum`, written as its MSN example does, with two fairness fixes: the prototypes get their gradient
  (the example passes `.data`) and only the 224 anchor is token-dropped (the example also drops focal tokens).
FLOPs of each step (online forward, backward, no-grad target forward) come from torch's FlopCounterMode;
MFU = FLOPs / median step time / the best fp32 (or bf16) matmul rate, timed as a third side in the same A B A B
rounds (`mfu_at_median_peak` divides by the median matmul rate instead: fairer when the machine is busy).
--compile adds a third side, `masklab_compiled`: the same Trainer step with `compile=True` (its transformer blocks
compiled by inductor), the same work and FLOPs; lightly stays eager, as its example runs.
"""
import argparse, copy, itertools, json
import torch
from torch import nn
from common import add_common_args, setup, machine, count_flops, autocast, time_sides

VITS = {'vit_tiny': dict(embed_dim=192, depth=12, num_heads=3), 'vit_small': dict(embed_dim=384, depth=12, num_heads=6),
        'vit_base': dict(embed_dim=768, depth=12, num_heads=12),
        'vit_micro': dict(embed_dim=64, depth=2, num_heads=2)}  # --quick only

def make_batch(B, rand_size, focal_size, focal_views, dev):
    g = torch.Generator().manual_seed(0)
    t = lambda n, s: torch.randn(n, 3, s, s, generator=g).to(dev)
    return dict(target=t(B, rand_size), anchors=[t(B, rand_size), t(focal_views * B, focal_size)])

def masklab_step(model_name, B, batch, dev, dtype, patch_drop, shared_mask=True, compile=False):
    "masklab's MSN and its Trainer; returns (step fn, fwd+bwd fn, no-grad target fn, model)"
    size = batch['target'].shape[-1]
    from masklab.encoders import TokenDropViT
    from masklab.msn import MSN
    from masklab.trainer import Trainer
    torch.manual_seed(0)
    backbone = TokenDropViT('vit_small_patch16_224', img_size=size, patch_size=16, **VITS[model_name])
    model = MSN(backbone, patch_drop=patch_drop, shared_mask=shared_mask)
    trainer = Trainer(model, [0] * B, batch_size=B, max_steps=10 ** 6, device=str(dev),
                      precision='bf16' if dtype == 'bf16' else 'fp32', optim=dict(clip_grad=3.0),
                      schedule=dict(name='msn', lr=1e-3, warmup_steps=0), progress=False, log_every=10 ** 6,
                      compile=compile)
    it = itertools.repeat(batch)
    step = lambda: trainer.train_step(it)
    def fwd_bwd():
        with autocast(dev, dtype): out = model(batch)
        out['loss'].backward()
        model.zero_grad(set_to_none=True)
    def target_fwd():
        with torch.no_grad(), autocast(dev, dtype): model.target_encoder(batch['target'])
    return step, fwd_bwd, target_fwd, model

def lightly_step(model_name, B, batch, dev, dtype, patch_drop):
    "lightly's MSN pieces in its example's training step; returns (step fn, flop fn, target fn, modules)"
    import timm
    size = batch['target'].shape[-1]
    from lightly.models import utils
    from lightly.models.modules import MaskedVisionTransformerTIMM
    from lightly.models.modules.heads import MSNProjectionHead
    from lightly.loss import MSNLoss
    torch.manual_seed(0)
    vit = timm.create_model('vit_small_patch16_224', pretrained=False, num_classes=0, dynamic_img_size=True,
                            img_size=size, patch_size=16, **VITS[model_name])
    backbone = MaskedVisionTransformerTIMM(vit=vit).to(dev)
    head = MSNProjectionHead(input_dim=vit.embed_dim, hidden_dim=2048, output_dim=256).to(dev)
    t_backbone, t_head = copy.deepcopy(backbone), copy.deepcopy(head)
    utils.deactivate_requires_grad(t_backbone); utils.deactivate_requires_grad(t_head)
    prototypes = nn.Linear(256, 1024, bias=False).to(dev).weight
    crit = MSNLoss(temperature=0.1, sinkhorn_iterations=3, regularization_weight=1.0)
    params = list(backbone.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params + [prototypes], lr=1e-3, weight_decay=0.04)
    seq = backbone.sequence_length
    target, (anchor, focal) = batch['target'], batch['anchors']
    def forward():
        with torch.no_grad(): h = t_head(t_backbone(images=target))
        idx_keep, _ = utils.random_token_mask(size=(anchor.shape[0], seq), mask_ratio=patch_drop, device=dev)
        z = torch.cat([head(backbone(images=anchor, idx_keep=idx_keep)), head(backbone(images=focal))])
        return crit(z, h, prototypes, target_sharpen_temperature=0.25)
    def step():
        with autocast(dev, dtype): loss = forward()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 3.0)
        opt.step(); opt.zero_grad(set_to_none=True)
        utils.update_momentum(backbone, t_backbone, 0.996); utils.update_momentum(head, t_head, 0.996)
        return loss.item()
    def fwd_bwd():
        with autocast(dev, dtype): loss = forward()
        loss.backward(); opt.zero_grad(set_to_none=True)
    def target_fwd():
        with torch.no_grad(), autocast(dev, dtype): t_head(t_backbone(images=target))
    return step, fwd_bwd, target_fwd, (backbone, head)

def flops_of(fwd_bwd, target_fwd) -> dict:
    total, target = count_flops(fwd_bwd), count_flops(target_fwd)
    # backward of a matmul costs 2x its forward; the no-grad target forward runs once
    online = total - target
    return dict(total=total, target_forward=target, online_forward=round(online / 3), backward=round(2 * online / 3))

def main():
    p = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    p.add_argument('--models', default='vit_tiny,vit_small')
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--rand-size', type=int, default=224)
    p.add_argument('--focal-size', type=int, default=96)
    p.add_argument('--focal-views', type=int, default=10)
    p.add_argument('--patch-drop', type=float, default=0.15)
    p.add_argument('--sides', default='masklab,lightly')
    a = p.parse_args()
    if a.quick: a.models, a.batch, a.rand_size, a.focal_size, a.focal_views, a.repeats = 'vit_micro', 2, 64, 32, 2, 2
    dev = setup(a)
    out = dict(bench='msn_step', machine=machine(dev), dtype=a.dtype, batch=a.batch, rand_size=a.rand_size,
               focal_size=a.focal_size, views=dict(target=1, rand_anchor=1, focal=a.focal_views), patch_drop=a.patch_drop,
               repeats=a.repeats, results={})
    for name in a.models.split(','):
        batch = make_batch(a.batch, a.rand_size, a.focal_size, a.focal_views, dev)
        sides = {}
        if 'masklab' in a.sides: sides['masklab'] = masklab_step(name, a.batch, batch, dev, a.dtype, a.patch_drop)
        if 'lightly' in a.sides: sides['lightly'] = lightly_step(name, a.batch, batch, dev, a.dtype, a.patch_drop)
        flops = {k: flops_of(v[1], v[2]) for k, v in sides.items()}
        if a.compile and 'masklab' in sides:  # the same work (its FLOPs are the eager side's), compiled blocks
            sides['masklab_compiled'] = masklab_step(name, a.batch, batch, dev, a.dtype, a.patch_drop, compile=True)
            flops['masklab_compiled'] = flops['masklab']
        r = time_sides({k: v[0] for k, v in sides.items()}, flops, a.batch, dev, a, out)
        out['results'][name] = r
        del sides
    print(json.dumps(out, indent=1))

if __name__ == '__main__': main()
