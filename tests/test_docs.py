"""tools/build_docs.py, the offline docs build: the pictures the notebooks' markdown shows are copied into the site."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def test_index_picture_is_in_the_site(tmp_path):
    spec = importlib.util.spec_from_file_location('build_docs', ROOT/'tools'/'build_docs.py')
    bd = importlib.util.module_from_spec(spec); spec.loader.exec_module(bd)
    bd.OUT = tmp_path/'html'
    index = [bd.NBS/'index.ipynb']
    bd.build(index)
    page = (bd.OUT/'index.html').read_text()
    assert 'src="images/simmim_reconstruction.png"' in page
    assert (bd.OUT/'images'/'simmim_reconstruction.png').read_bytes() == (bd.NBS/'images'/'simmim_reconstruction.png').read_bytes()
    # only index.ipynb was built, so its links to other pages are missing; no picture may be
    assert not [p for p in bd.check(index) if 'picture' in p]
    (bd.OUT/'images'/'simmim_reconstruction.png').unlink()
    assert [p for p in bd.check(index) if 'picture missing images/simmim_reconstruction.png' in p]  # the check sees it
