"""Samples/s of MSN's 12 views and SimMIM's crop + mask: the batched path vs the per-image PIL path vs lightly; JSON.

    python bench/bench_views.py [--batch 16] [--repeats 5] [--threads 1] [--device cpu|cuda] [--quick]

On the CPU every side runs in this one process on `--threads` torch threads (default 1: samples/s per core), timed
A B C A B C ... with the order rotated each round (`common.alternate`), on the bundled photos (`masklab.data.photos`,
14 photos of 300-1411 px, decoded to PIL once and cycled), at the official sizes (224 + 96 px, 1 target + 1 anchor +
10 focal; SimMIM 224 px, 32 px mask units):

- `pil`: the reference path, `Views(MSNViews())` per sample + `collate_views` (SimMIM: `MaskedView` + `collate_masked`);
- `batched`: `view_pipeline(method, {'device': 'auto'})`: `DecodedViews` per sample + `collate_decoded`, then
  `BatchViews` on the batch, all on the CPU (the loader's work and the device's work on one core);
- `batched_worker`: the loader's share of `batched` alone (decode to uint8, draw the parameters, collate);
- `pil_arrays`, `batched_arrays`, `batched_worker_arrays`: the same three with the photos held as uint8 arrays in a
  `masklab.data.ImageDataset`, as the bundled training sets are (`photo_crops`, `digits`, `mnist`): the PIL path
  makes a PIL image of each (`ImageDataset.__getitem__`), the batched worker views the array as is (`DecodedViews`
  takes arrays: `ImageDataset.stored`, no copy);
- `pil_files`, `batched_files`, `batched_worker_files`: the same three reading the photos from JPEG files (quality 90,
  written once to a scratch folder) through `masklab.data.ImageFolderDataset`, the way ImageNet is read: the PIL path
  opens and decodes each file with Pillow, the batched worker decodes it straight to a uint8 tensor
  (`ImageFolderDataset.stored`, torchvision's decoder);
- `lightly` (MSN only, if lightly is installed): `lightly.transforms.MSNTransform(cj_strength=0.5)` per sample (its
  jitter at 0.4, 0.4, 0.4, 0.1 like the official recipe; 2 random + 10 focal views) + stacking per view.

With `--device cuda` the batched path is timed where it runs in training: `batched_worker` (per CPU core) and
`batched_device` (BatchViews on the GPU from a collated CPU batch, the copy to the GPU included, synchronized;
samples/s of the whole device), beside `pil` per core. bench/run.py divides these by the model's images/s from bench_msn / bench_simmim.
"""
import argparse, atexit, json, shutil, tempfile
from common import add_common_args, setup, machine, alternate, stats, throughput

def sides(method, batch, dev, quick):
    "name -> callable making one batch, for `method`"
    import torch
    import numpy as np
    from masklab.data import photos, Views, ImageDataset, ImageFolderDataset
    from masklab.views import view_pipeline
    imgs = [im for _, im in photos()]
    if quick: imgs = [im.resize((128, 128)) for im in imgs[:4]]
    data = [(imgs[i % len(imgs)], i % len(imgs)) for i in range(batch)]
    arrays = ImageDataset([np.array(im) for im, _ in data], [y for _, y in data], [str(k) for k in range(len(imgs))])
    folder = tempfile.mkdtemp(prefix='bench_views_')
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    for i, (im, _) in enumerate(data): im.save(f'{folder}/{i:04d}.jpg', quality=90)
    files = ImageFolderDataset(folder)
    if method == 'msn':
        views = dict(rand_size=64, focal_size=32, focal_views=2) if quick else {}
    else:
        views = dict(img_size=64, mask_patch_size=16, model_patch_size=16, mask_ratio=0.6) if quick else \
            dict(img_size=224, mask_patch_size=32, model_patch_size=16, mask_ratio=0.6)
    tf, col, _ = view_pipeline(method, {**views, 'device': 'cpu'}, 'cpu')
    btf, bcol, aug = view_pipeline(method, {**views, 'device': 'auto'}, dev)
    fns = {}
    for tail, src in (('', data), ('_arrays', arrays), ('_files', files)):
        ref, bat = Views(src, tf, seed=0), Views(src, btf, seed=0)
        fns['pil' + tail] = lambda ref=ref: col([ref[i] for i in range(batch)])
        worker = lambda bat=bat: bcol([bat[i] for i in range(batch)])
        fns['batched_worker' + tail] = worker  # the loader's share alone: decode, draw the parameters, collate
        if dev.type == 'cpu': fns['batched' + tail] = lambda worker=worker: aug(worker())
        elif not tail:
            raw = worker()
            fns['batched_device'] = lambda: aug(raw, dev)
    if method == 'msn':
        try:
            from lightly.transforms import MSNTransform
        except ImportError: return fns, views
        lt = MSNTransform(**(dict(random_size=64, focal_size=32, focal_views=2) if quick else {}), cj_strength=0.5)
        def lightly_side():
            vs = [lt(im) for im, _ in data]
            return [torch.stack([v[k] for v in vs]) for k in range(len(vs[0]))]
        fns['lightly'] = lightly_side
    return fns, views

def main():
    p = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    p.add_argument('--batch', type=int, default=16, help='samples per timed call (one loader batch)')
    p.add_argument('--methods', default='msn,simmim')
    p.set_defaults(threads=1)
    a = p.parse_args()
    if a.quick: a.batch = min(a.batch, 4)
    dev = setup(a)
    out = dict(bench='views', machine=machine(dev), batch=a.batch, threads=a.threads, repeats=a.repeats, results={})
    for method in a.methods.split(','):
        fns, views = sides(method, a.batch, dev, a.quick)
        times = alternate(fns, dev, a.repeats, a.warmup)
        r = {k: dict(seconds=stats(t), samples_per_s=throughput(t, a.batch)) for k, t in times.items()}
        for k in r:
            if k != 'batched_device': r[k]['samples_per_s_per_core'] = round(r[k]['samples_per_s']['median'] / max(1, a.threads), 2)
        base = 'batched' if 'batched' in r else 'batched_device'
        for base, other in ((base, 'pil'), (base, 'lightly'), ('batched_arrays', 'pil_arrays'),
                            ('batched_files', 'pil_files')):
            if other in times and base in times:
                r[f'ratio_{base}_over_{other}'] = dict(
                    median=round(r[base]['samples_per_s']['median'] / r[other]['samples_per_s']['median'], 3),
                    pairs=stats([to / tb for tb, to in zip(times[base], times[other])]))
        out['results'][method] = dict(views=views, **r)
    out['machine_after'] = machine(dev)
    print(json.dumps(out, indent=1))

if __name__ == '__main__': main()
