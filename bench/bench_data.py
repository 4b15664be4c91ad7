"""Samples/s of masklab's data pipeline, per loader worker, for MSN's 12 views and SimMIM's crop + mask; JSON.

    python bench/bench_data.py [--batch 16] [--batches 4] [--workers 0] [--quick]

The loader is the Trainer's own (`Trainer._loader`: Views + DataLoader + the method's collate), with the default
config (`num_workers=0`: views are made in the training process) unless --workers says otherwise; the images are
the bundled photos (`masklab.data.photos`, 14 photos of about 512 px, decoded once), cycled to fill the batches.
Per worker = samples/s / max(1, workers). Compare with the model's images/s from bench_msn / bench_simmim.
"""
import argparse, json, time
from common import add_common_args, setup, machine, stats

def loader_rate(transform, collate, batch, batches, workers, repeats):
    from masklab.data import photos
    from masklab.trainer import Trainer, ToyMethod
    imgs = [im for _, im in photos()]
    ds = [(imgs[i % len(imgs)], i % len(imgs)) for i in range(batch * batches)]
    tr = Trainer(ToyMethod(), ds, transform, collate=collate, batch_size=batch, max_steps=batches, device='cpu',
                 num_workers=workers, progress=False)
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        n = sum(len(b['label']) for b in tr._loader(r))
        times.append(time.perf_counter() - t0)
    return dict(samples_per_s=dict(min=round(n / max(times), 2), median=round(n / stats(times)['median'], 2),
                                   max=round(n / min(times), 2)),
                per_worker_samples_per_s=round(n / stats(times)['median'] / max(1, workers), 2), samples=n)

def main():
    p = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    p.add_argument('--batch', type=int, default=16)
    p.add_argument('--batches', type=int, default=4)
    p.add_argument('--workers', type=int, default=0)
    p.add_argument('--rand-size', type=int, default=224)
    p.add_argument('--focal-size', type=int, default=96)
    p.add_argument('--focal-views', type=int, default=10)
    a = p.parse_args()
    a.repeats = min(a.repeats, 3)
    if a.quick: a.batch, a.batches, a.rand_size, a.focal_size, a.focal_views, a.repeats = 2, 1, 64, 32, 2, 1
    setup(a)  # threads and seeds
    from masklab.views import MSNViews, collate_views, MaskedView, collate_masked
    out = dict(bench='data', machine=machine('cpu'), batch=a.batch, batches=a.batches, workers=a.workers, repeats=a.repeats)
    views = MSNViews(a.rand_size, a.focal_size, 1, a.focal_views)
    out['msn'] = dict(views=views.n_views, rand_size=a.rand_size, focal_size=a.focal_size,
                      **loader_rate(views, collate_views, a.batch, a.batches, a.workers, a.repeats))
    out['simmim'] = dict(img_size=a.rand_size, **loader_rate(MaskedView(a.rand_size, 32 if a.rand_size % 32 == 0 else 16, 16, 0.6),
                                                              collate_masked, a.batch, a.batches, a.workers, a.repeats))
    print(json.dumps(out, indent=1))

if __name__ == '__main__': main()
