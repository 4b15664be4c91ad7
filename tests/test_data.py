"""Data edge cases on folders the tests build: layouts, corrupt files, modes, loader determinism."""
import numpy as np, torch, pytest
from PIL import Image
from masklab.data import (ImageFolderDataset, get_dataset, make_loader, simmim_transform, MSNViews, Views,
                          collate_views, photo_crops, to_rgb, tv_dataset)

def save(path, mode='RGB', size=(20, 16)):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(0).integers(0, 255, (size[1], size[0], 4), dtype=np.uint8)
    Image.fromarray(arr, 'RGBA').convert(mode).save(path)

def test_flat_folder_is_one_class(tmp_path):
    for i in range(3): save(tmp_path/f'{i}.png')
    ds = ImageFolderDataset(tmp_path)
    assert ds.classes == [''] and len(ds) == 3 and ds[0][1] == 0

@pytest.mark.parametrize('mode', ['L', 'RGBA', 'P', 'I;16', 'CMYK'])
def test_modes_become_rgb(tmp_path, mode):
    ext = 'jpg' if mode == 'CMYK' else 'png'
    save(tmp_path/f'x.{ext}', mode)
    img, _ = ImageFolderDataset(tmp_path)[0]
    assert img.mode == 'RGB' and img.size == (20, 16)

@pytest.mark.parametrize('mode,ext', [('RGB', 'jpg'), ('L', 'jpg'), ('CMYK', 'jpg'), ('RGB', 'png'), ('L', 'png'),
                                      ('LA', 'png'), ('RGBA', 'png'), ('P', 'png'), ('1', 'png'), ('I;16', 'png'), ('RGB', 'bmp')])
def test_stored_is_the_pil_images_pixels(tmp_path, mode, ext):
    "The batched views' decode (torchvision for JPEG/PNG, Pillow for 16-bit PNG and BMP): the pixels of `ds[i]`, as an HxWx3 uint8 tensor"
    save(tmp_path/f'x.{ext}', mode)
    ds = ImageFolderDataset(tmp_path)
    a, y = ds.stored(0)
    assert isinstance(a, torch.Tensor) and a.dtype == torch.uint8 and a.shape == (16, 20, 3) and y == 0
    assert np.array_equal(a.numpy(), np.asarray(ds[0][0]))

def test_stored_skips_and_raises_like_getitem(tmp_path):
    save(tmp_path/'a/0.jpg'); (tmp_path/'a/1.jpg').write_bytes(b'garbage'); save(tmp_path/'b/0.png')
    data = (tmp_path/'b/0.png').read_bytes(); (tmp_path/'b/1.png').write_bytes(data[:len(data) // 2])
    ds = ImageFolderDataset(tmp_path)
    for i in range(len(ds)): assert np.array_equal(ds.stored(i)[0].numpy(), np.asarray(ds[i][0]))
    assert ds.skipped == 4  # the two bad files, once on each path
    with pytest.raises(ValueError, match='1.jpg'): ImageFolderDataset(tmp_path, on_corrupt='raise').stored(1)

def test_missing_empty_and_file_roots(tmp_path):
    with pytest.raises(ValueError, match='does not exist'): ImageFolderDataset(tmp_path/'nope')
    with pytest.raises(ValueError, match='holds no images'): ImageFolderDataset(tmp_path)
    (tmp_path/'notes.txt').write_text('hi')
    with pytest.raises(ValueError, match='holds no images'): ImageFolderDataset(tmp_path)
    with pytest.raises(ValueError, match='is not a folder'): ImageFolderDataset(tmp_path/'notes.txt')

def test_corrupt_files_skip_count_and_raise(tmp_path):
    save(tmp_path/'a/0.png'); (tmp_path/'a/1.png').write_bytes(b'garbage'); save(tmp_path/'b/0.png')
    ds = ImageFolderDataset(tmp_path)
    imgs = [ds[i][0] for i in range(len(ds))]
    assert all(im.mode == 'RGB' for im in imgs) and ds.skipped == 1
    assert len(ImageFolderDataset(tmp_path, scan=True)) == 2
    with pytest.raises(ValueError, match='1.png'): ImageFolderDataset(tmp_path, on_corrupt='raise')[1]
    with pytest.raises(ValueError, match="one of 'skip', 'raise'"): ImageFolderDataset(tmp_path, on_corrupt='ignore')

def test_all_corrupt(tmp_path):
    (tmp_path/'x.jpg').write_bytes(b'no'); (tmp_path/'y.png').write_bytes(b'')
    with pytest.raises(ValueError, match='none of its 2 images'): ImageFolderDataset(tmp_path)[0]
    with pytest.raises(ValueError, match='none of its 2 images'): ImageFolderDataset(tmp_path, scan=True)

def test_truncated_image(tmp_path):
    save(tmp_path/'ok.png', size=(64, 64)); save(tmp_path/'cut.png', size=(64, 64))
    data = (tmp_path/'cut.png').read_bytes(); (tmp_path/'cut.png').write_bytes(data[:len(data) // 2])
    ds = ImageFolderDataset(tmp_path, scan=True)
    assert len(ds) == 1 and ds.skipped == 1

def test_to_rgb_rejects_wrong_types():
    with pytest.raises(TypeError, match='uint8'): to_rgb(np.zeros((4, 4), np.float32))
    with pytest.raises(TypeError, match='PIL image'): to_rgb('x.png')
    with pytest.raises(ValueError, match='HxW'): to_rgb(np.zeros((2, 4, 4, 3), np.uint8))

def test_get_dataset_resolves(tmp_path):
    save(tmp_path/'0.png')
    assert len(get_dataset(str(tmp_path))) == 1
    assert len(get_dataset('digits')) == 1797
    with pytest.raises(ValueError, match='pass download=True'): get_dataset(f'cifar10:{tmp_path}')
    with pytest.raises(ValueError, match="split must be one of"): tv_dataset('cifar10', tmp_path, split='val')
    with pytest.raises(TypeError): get_dataset(3)

def test_transforms_validate():
    with pytest.raises(ValueError, match='img_size must be >= 8'): simmim_transform(4)
    with pytest.raises(ValueError, match='rand_views \\+ focal_views'): MSNViews(rand_views=0, focal_views=0)
    with pytest.raises(ValueError, match='focal_scale'): MSNViews(focal_scale=(0.5, 0.1))
    with pytest.raises(TypeError, match='focal_views must be an integer'): MSNViews(focal_views=2.5)

def test_msn_views_official_defaults():
    t = MSNViews()
    vs = t(Image.new('RGB', (300, 260), 'white'))
    assert [v.shape[-1] for v in vs] == [224, 224] + [96] * 10 and t.n_views == 12

def test_loader_same_global_batch_for_any_process_count():
    ds = photo_crops(n_per_photo=3, size=16)
    def batches(world, bs):
        out = []
        for r in range(world):
            dl = make_loader(ds, simmim_transform(16), batch_size=bs, seed=5, rank=r, world_size=world)
            dl.set_epoch(1)
            out.append(next(iter(dl)))
        return out
    one, = batches(1, 12)
    four = batches(4, 3)
    # rank r takes every 4th index of the global permutation: the global batch is the same images
    got = torch.cat([b['image'] for b in four])
    key = lambda t: sorted(t.flatten(1).sum(1).tolist())
    assert np.allclose(key(one['image']), key(got), atol=1e-4)

def test_loader_batch_too_large():
    with pytest.raises(ValueError, match='batch_size 100 is larger'):
        make_loader(photo_crops(n_per_photo=1, size=16), batch_size=100)

def test_collate_rejects_ragged():
    with pytest.raises(ValueError, match='same number of views'):
        collate_views([([torch.zeros(3, 4, 4)] * 2, 0), ([torch.zeros(3, 4, 4)] * 3, 1)])
