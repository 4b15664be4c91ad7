"""Notebook hygiene, checked on the notebooks as committed (with their saved outputs).

The rules, one test each, over every notebook under nbs/ (names starting with `_` or `.` excluded):
- no saved widget state (the notebook-level `widgets` metadata, or widget-state outputs): it is large, stale and
  useless without a kernel;
- no error outputs (an `error` output, or a traceback printed to stderr);
- no absolute paths of this machine in outputs (`/work/`, `/root/`, `/tmp/`, `/home/NAME/`, `/Users/NAME/`): a
  learner's output will differ, and it leaks the author's layout;
- outputs small: at most `BUDGET` bytes of outputs per notebook and `MAX_OUTPUT` per output (figures are saved as
  JPEG; see any lesson's hidden `set_matplotlib_formats('jpeg')` cell);
- every figure has a caption: a code cell with an image output must have a markdown cell right before or right
  after it that holds at least one sentence (`CAPTION_WORDS` words or more, ending in `.`, `:` or `?`), or print
  such a sentence itself (stream or text output of the same cell).
"""
import json, re
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
NBS = sorted(p for p in (ROOT/'nbs').rglob('*.ipynb')
             if not any(s.startswith(('_', '.')) for s in p.relative_to(ROOT/'nbs').parts))
BUDGET = 600_000 # bytes of saved outputs per notebook
MAX_OUTPUT = 150_000 # bytes of one output (a JPEG figure at the lessons' sizes is 20-80 kB)
CAPTION_WORDS = 6
ABS_PATH = re.compile(r'(?<![\w.])(/work/|/root/|/tmp/|/home/[\w.-]+/|/Users/[\w.-]+/|[A-Z]:\\Users\\)')
IMAGE = ('image/png', 'image/jpeg', 'image/svg+xml', 'image/gif')

def load(p): return json.loads(p.read_text())
def ids(): return [str(p.relative_to(ROOT/'nbs')) for p in NBS]
def cells(nb): return list(enumerate(nb['cells']))
def text(x): return ''.join(x) if isinstance(x, list) else json.dumps(x) if isinstance(x, dict) else (x or '')

def output_texts(o):
    "The text an output shows: stream text, or the text-like entries of its data"
    if o.get('output_type') == 'stream': return [text(o.get('text'))]
    if o.get('output_type') == 'error': return [text(o.get('evalue')), '\n'.join(o.get('traceback', []))]
    return [text(v) for k, v in o.get('data', {}).items() if k.startswith('text/') or k.endswith('json')]

def is_sentence(s):
    s = re.sub(r'<[^>]+>|[#*_`>|]', ' ', s)
    return any(len(part.split()) >= CAPTION_WORDS for part in re.findall(r'[^.:?!]+[.:?!]', s))

def test_there_are_notebooks(): assert len(NBS) >= 10, NBS

@pytest.mark.parametrize('path', NBS, ids=ids())
def test_no_widget_state(path):
    nb = load(path)
    assert 'widgets' not in nb.get('metadata', {}), f"{path.name}: saved widget state in the notebook metadata"
    bad = [i for i, c in cells(nb) for o in c.get('outputs', []) if 'application/vnd.jupyter.widget-state+json' in o.get('data', {})]
    assert not bad, f"{path.name}: widget state saved in the outputs of cells {bad}"

@pytest.mark.parametrize('path', NBS, ids=ids())
def test_no_error_outputs(path):
    bad = [(i, o.get('ename') or 'Traceback on stderr') for i, c in cells(load(path)) for o in c.get('outputs', [])
           if o.get('output_type') == 'error' or (o.get('name') == 'stderr' and 'Traceback (most recent call last)' in text(o.get('text')))]
    assert not bad, f"{path.name}: error outputs (cell index, error) {bad}"

@pytest.mark.parametrize('path', NBS, ids=ids())
def test_no_absolute_paths_in_outputs(path):
    bad = [(i, m.group(0)) for i, c in cells(load(path)) for o in c.get('outputs', []) for t in output_texts(o)
           for m in [ABS_PATH.search(t)] if m]
    assert not bad, f"{path.name}: absolute paths in the outputs of cells (cell index, path) {bad}"

@pytest.mark.parametrize('path', NBS, ids=ids())
def test_outputs_within_budget(path):
    sizes = [(i, len(json.dumps(o))) for i, c in cells(load(path)) for o in c.get('outputs', [])]
    big = [(i, n) for i, n in sizes if n > MAX_OUTPUT]
    assert not big, f"{path.name}: outputs over {MAX_OUTPUT} bytes (cell index, bytes) {big}; save figures as JPEG or smaller"
    total = sum(n for _, n in sizes)
    assert total <= BUDGET, f"{path.name}: {total} bytes of outputs, over the budget of {BUDGET}"

def uncaptioned(nb):
    "Indices of code cells with an image output and no caption sentence next to them"
    cs, bad = nb['cells'], []
    for i, c in enumerate(cs):
        outs = c.get('outputs', []) if c['cell_type'] == 'code' else []
        if not any(k in o.get('data', {}) for o in outs for k in IMAGE): continue
        near = [cs[j] for j in (i - 1, i + 1) if 0 <= j < len(cs) and cs[j]['cell_type'] == 'markdown']
        printed = [t for o in outs if o.get('output_type') == 'stream' or 'text/plain' in o.get('data', {})
                   and not text(o['data']['text/plain']).startswith('<Figure') for t in output_texts(o)]
        if not any(is_sentence(text(m['source'])) for m in near) and not any(is_sentence(t) for t in printed): bad.append(i)
    return bad

@pytest.mark.parametrize('path', NBS, ids=ids())
def test_every_figure_has_a_caption(path):
    bad = uncaptioned(load(path))
    assert not bad, (f"{path.name}: figures without a caption sentence in the markdown cell right before or after "
                     f"them, or in their own printed text: code cells {bad}")

def test_caption_rule_can_fail():
    "The caption check itself: a figure between two code cells has no caption; a sentence before it is one"
    fig = {'cell_type': 'code', 'source': 'fig', 'outputs': [{'output_type': 'display_data', 'data': {'image/jpeg': 'xx'}}]}
    code = {'cell_type': 'code', 'source': 'x = 1', 'outputs': []}
    md = lambda s: {'cell_type': 'markdown', 'source': s}
    assert uncaptioned({'cells': [code, fig, code]}) == [1]
    assert uncaptioned({'cells': [md('## Results'), fig]}) == [1]
    assert uncaptioned({'cells': [md('The masked image, its mask and the distance map:'), fig]}) == []
    assert uncaptioned({'cells': [code, fig, md('Each row is one setting of the mask generator.')]}) == []
