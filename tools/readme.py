#!/usr/bin/env python
"""Write README.md from nbs/index.ipynb, or check that it is up to date (`--check`).

nbdev's `nbdev-readme` renders the index through Quarto, which cannot always be installed (not offline, for one).
This does the same job for what the index holds: markdown cells as they are, code cells as ```python blocks with
their text outputs, cells marked `#| hide` left out. Image outputs are left out too: README.md is read as text; a
picture the page shows is a committed file linked from markdown (`![...](images/x.png)`), and its relative path
is re-pointed from nbs/ to the repository root (`nbs/images/x.png`) so that it shows in the README as well.
"""
import argparse, difflib, json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADER = "<!-- Generated from nbs/index.ipynb by tools/readme.py: edit the notebook, then run that script. -->\n\n"

def _src(cell): return ''.join(cell['source']) if isinstance(cell['source'], list) else cell['source']

def _directives(src):
    return {l[3:].strip().split(':')[0].split()[0] for l in src.splitlines() if l.startswith('#|') and l[3:].strip()}

def _outputs(cell):
    out = []
    for o in cell.get('outputs', []):
        if o['output_type'] == 'stream':
            if o.get('name') == 'stderr': continue  # warnings and progress bars are not part of the page
            text = ''.join(o['text'])
        elif o['output_type'] in ('execute_result', 'display_data') and 'text/plain' in o['data'] \
                and not any(k.startswith('image/') for k in o['data']):
            text = ''.join(o['data']['text/plain'])
        else: continue
        if text.strip(): out.append(f"```\n{text.rstrip()}\n```")
    return out

def _from_root(md:str) -> str:
    "Markdown image links relative to nbs/ (the notebook's folder), re-pointed to work from the repository root"
    return re.sub(r'(!\[[^\]]*\]\()(?![a-z]+://|/|#)([^)\s]+)', r'\1nbs/\2', md)

def render(nb_path=ROOT/'nbs'/'index.ipynb') -> str:
    "The README text for the notebook at `nb_path`"
    nb = json.loads(Path(nb_path).read_text())
    parts = []
    for cell in nb['cells']:
        src = _src(cell)
        if cell['cell_type'] == 'markdown': parts.append(_from_root(src.strip()))
        elif cell['cell_type'] == 'code':
            if 'hide' in _directives(src): continue
            code = '\n'.join(l for l in src.splitlines() if not l.startswith('#|')).strip()
            if code: parts.append(f"```python\n{code}\n```")
            parts.extend(_outputs(cell))
    return HEADER + '\n\n'.join(p for p in parts if p) + '\n'

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--check', action='store_true', help='exit 1 if README.md differs from what the notebook gives')
    args = p.parse_args(argv)
    want, readme = render(), ROOT/'README.md'
    have = readme.read_text() if readme.exists() else ''
    if not args.check:
        if have != want: readme.write_text(want)
        print(f"README.md {'written' if have != want else 'already up to date'}")
        return 0
    if have == want:
        print("README.md matches nbs/index.ipynb")
        return 0
    sys.stdout.writelines(difflib.unified_diff(have.splitlines(True), want.splitlines(True), 'README.md', 'from nbs/index.ipynb'))
    print("README.md is out of date: run `python tools/readme.py` and commit the result", file=sys.stderr)
    return 1

if __name__ == '__main__': sys.exit(main())
