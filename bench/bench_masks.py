"""Time SimMIM mask generation for a batch against the model step that uses it; prints JSON.

    python bench/bench_masks.py [--device auto|cpu|cuda] [--batch 256] [--model-batch 8]

Three timings, each the median of `--repeats` runs after warm-up runs:
- `batched_s`: `random_unit_masks` makes the whole batch in one call on the device;
- `loop_s`: the official style, one `MaskGenerator()` call per sample in NumPy, stacked into a tensor and moved;
- `model_step_per_batch_s`: a timm `vit_tiny_patch16_224` forward + backward on a small batch (`--model-batch`),
  scaled per image to `--batch` images (stated in the JSON as `model_step_scaled_from`).
"""
import argparse, json, os, platform, statistics, time
import numpy as np
import torch
import timm
from masklab.core import get_device
from masklab.masking import MaskGenerator, random_unit_masks

def _timeit(fn, device, repeats, warmup=3):
    "Median seconds of `fn()` over `repeats` runs, after `warmup` runs, synchronizing CUDA"
    def sync():
        if device.type == 'cuda': torch.cuda.synchronize(device)
    for _ in range(warmup): fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter(); fn(); sync(); times.append(time.perf_counter() - t0)
    return statistics.median(times)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='auto')
    p.add_argument('--batch', type=int, default=256)
    p.add_argument('--input-size', type=int, default=224)
    p.add_argument('--mask-patch-size', type=int, default=32)
    p.add_argument('--model-patch-size', type=int, default=16)
    p.add_argument('--mask-ratio', type=float, default=0.6)
    p.add_argument('--model-batch', type=int, default=8)
    p.add_argument('--repeats', type=int, default=20)
    p.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: torch default)')
    a = p.parse_args()
    dev = get_device(a.device)
    if a.threads: torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    args = (a.input_size, a.mask_patch_size, a.model_patch_size, a.mask_ratio)

    g = torch.Generator(device=dev).manual_seed(0)
    batched = _timeit(lambda: random_unit_masks(a.batch, *args, device=dev, generator=g), dev, a.repeats)

    gen = MaskGenerator(*args, seed=0)
    loop = _timeit(lambda: torch.from_numpy(np.stack([gen() for _ in range(a.batch)])).to(dev), dev, a.repeats)

    model = timm.create_model('vit_tiny_patch16_224', pretrained=False, num_classes=0).to(dev).train()
    x = torch.randn(a.model_batch, 3, 224, 224, device=dev)
    def step():
        model.zero_grad(set_to_none=True)
        model(x).float().pow(2).mean().backward()
    step_small = _timeit(step, dev, max(3, a.repeats // 4), warmup=1)
    step_full = step_small / a.model_batch * a.batch

    print(json.dumps({
        'device': str(dev) + (f' ({torch.cuda.get_device_name(dev)})' if dev.type == 'cuda' else f' ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)'),
        'torch': torch.__version__,
        'load_average_1min': round(os.getloadavg()[0], 2),  # a busy CPU distorts multi-threaded timings
        'batch': a.batch, 'input_size': a.input_size, 'mask_patch_size': a.mask_patch_size,
        'model_patch_size': a.model_patch_size, 'mask_ratio': a.mask_ratio, 'repeats': a.repeats,
        'batched_s': round(batched, 6),
        'loop_s': round(loop, 6),
        'loop_over_batched': round(loop / batched, 1),
        'model': 'timm vit_tiny_patch16_224, forward + backward, fp32',
        'model_step_scaled_from': f'batch {a.model_batch}, scaled per image to {a.batch}',
        'model_step_small_batch_s': round(step_small, 6),
        'model_step_per_batch_s': round(step_full, 4),
        'model_step_over_batched_masks': round(step_full / batched, 1),
        'masks_faster_than_model_step': batched < step_full,
    }, indent=1))

if __name__ == '__main__': main()
