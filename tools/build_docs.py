#!/usr/bin/env python
"""Offline HTML build of masklab's executed notebooks, and its check: the docs where Quarto is not installed.

`nbdev-docs` builds the real site with Quarto (configuration: nbs/_quarto.yml and nbs/sidebar.yml; CI on GitHub
deploys it with .github/workflows/deploy.yaml). Quarto cannot always be installed, so this script renders the same
notebooks, with the outputs they were committed with (nothing is executed), into `_docs/html/` with nbconvert, and
a sidebar in the order of nbs/sidebar.yml. Like nbdev's docs it drops `#| hide` cells and the `#|` directive lines,
and like Quarto it copies the pictures the markdown links to (nbs/images/) beside the pages.

Then it checks the build: every notebook became a page that parses as HTML and has its title; no page shows an
error output; every figure a notebook saved is on its page (one <img> per image output at least); every picture a page
shows and every sidebar link points at a file that exists. It prints one line per problem and `docs: N pages, N
figures, N problems`, and exits non-zero when there is a problem.

    python tools/build_docs.py            # build and check
    python tools/build_docs.py --check    # check the last build only
"""
import argparse, html, json, re, shutil, sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT/'nbs'
OUT = ROOT/'_docs'/'html'
IMAGE = ('image/png', 'image/jpeg', 'image/svg+xml', 'image/gif')
DIRECTIVE = re.compile(r'^\s*#\|\s*(\S+)')
ASSETS = ('images',)  # folders of nbs/ that the notebooks' markdown links to, copied into the site as they are

def notebooks():
    return sorted(p for p in NBS.rglob('*.ipynb') if not any(s.startswith(('_', '.')) for s in p.relative_to(NBS).parts))

def page_of(nb:Path) -> Path: return OUT/nb.relative_to(NBS).with_suffix('.html')

def sidebar_order(nbs):
    "Notebook paths in the order of nbs/sidebar.yml (its `- file.ipynb` lines), then any others"
    listed = []
    sb = NBS/'sidebar.yml'
    if sb.exists():
        for m in re.finditer(r'^\s*-\s+(?:text:\s*.*\n\s*href:\s*)?([\w./-]+\.ipynb)\s*$', sb.read_text(), re.M):
            p = NBS/m.group(1)
            if p in nbs and p not in listed: listed.append(p)
    return listed + [p for p in nbs if p not in listed]

def title_of(nb) -> str:
    for c in nb.cells:
        if c.cell_type == 'markdown':
            m = re.search(r'^#\s+(.+)$', c.source, re.M)
            if m: return m.group(1).strip()
    return 'masklab'

def prepare(nb):
    "nbdev's rendering rules, the part that matters offline: drop `#| hide` cells and directive lines"
    keep = []
    for c in nb.cells:
        if c.cell_type == 'code':
            dirs = [m.group(1) for l in c.source.splitlines() for m in [DIRECTIVE.match(l)] if m]
            if 'hide' in dirs or 'default_exp' in dirs and len(c.source.splitlines()) == 1: continue
            c.source = '\n'.join(l for l in c.source.splitlines() if not DIRECTIVE.match(l)).strip('\n')
            if 'hide_input' in c.metadata.get('tags', []): c.source = ''
        keep.append(c)
    nb.cells = keep
    nb.metadata.pop('widgets', None)
    return nb

def nav(current:Path, order, titles) -> str:
    items = []
    for p in order:
        href = Path(*(['..'] * (len(page_of(current).relative_to(OUT).parts) - 1)), page_of(p).relative_to(OUT)).as_posix()
        cls = ' class="current"' if p == current else ''
        items.append(f'<li><a href="{href}"{cls}>{html.escape(titles[p])}</a></li>')
    return ('<nav class="masklab-nav" style="position:fixed;left:0;top:0;bottom:0;width:230px;overflow:auto;'
            'padding:12px;border-right:1px solid #ddd;font:14px sans-serif;background:#fafafa">'
            '<b>masklab</b><ul style="padding-left:16px">' + ''.join(items) + '</ul></nav>')

def build(nbs):
    import nbformat
    from nbconvert import HTMLExporter
    exporter = HTMLExporter(template_name='lab')
    order, titles, loaded = sidebar_order(nbs), {}, {}
    for p in nbs:
        loaded[p] = nbformat.read(p, as_version=4)
        titles[p] = title_of(loaded[p])
    for p in nbs:
        body, _ = exporter.from_notebook_node(prepare(loaded[p]), resources={'metadata': {'name': titles[p]}})
        body = re.sub(r'<title>.*?</title>', f'<title>{html.escape(titles[p])} - masklab</title>', body, count=1, flags=re.S)
        body = re.sub(r'(<body[^>]*>)', lambda m: m.group(1) + nav(p, order, titles) + '<div style="margin-left:250px">',
                      body, count=1)
        body = body.replace('</body>', '</div></body>', 1)
        body = re.sub(r'href="([^":#?]+)\.ipynb(#[^"]*)?"', r'href="\1.html\2"', body) # as Quarto does
        out = page_of(p)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(body)
    for d in ASSETS:
        if (NBS/d).is_dir(): shutil.copytree(NBS/d, OUT/d, dirs_exist_ok=True)
    print(f"built {len(nbs)} pages in {OUT.relative_to(ROOT) if OUT.is_relative_to(ROOT) else OUT}/")

class Page(HTMLParser):
    def __init__(self):
        super().__init__(); self.imgs, self.srcs, self.links, self.title, self._in_title = 0, [], [], '', False
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == 'img' and a.get('src'): self.imgs += 1; self.srcs.append(a['src'])
        if tag == 'a' and a.get('href'): self.links.append(a['href'])
        if tag == 'title': self._in_title = True
    def handle_endtag(self, tag):
        if tag == 'title': self._in_title = False
    def handle_data(self, data):
        if self._in_title: self.title += data

def check(nbs) -> list[str]:
    problems, figures = [], 0
    for p in nbs:
        page, nb = page_of(p), json.loads(p.read_text())
        name = p.relative_to(NBS).as_posix()
        if not page.exists() or page.stat().st_size == 0: problems.append(f"{name}: no page"); continue
        text = page.read_text()
        parser = Page()
        try: parser.feed(text); parser.close()
        except Exception as e: problems.append(f"{name}: the page does not parse: {e}"); continue
        if not parser.title.strip(): problems.append(f"{name}: the page has no title")
        n_img = sum(1 for c in nb['cells'] for o in c.get('outputs', []) if any(k in o.get('data', {}) for k in IMAGE))
        figures += parser.imgs
        if parser.imgs < n_img: problems.append(f"{name}: {n_img} figures saved in the notebook, {parser.imgs} on the page")
        n_err = sum(1 for c in nb['cells'] for o in c.get('outputs', []) if o.get('output_type') == 'error')
        if n_err or 'Traceback (most recent call last)' in text or 'jp-RenderedText" data-mime-type="application/vnd.jupyter.error' in text:
            problems.append(f"{name}: the page shows an error output")
        for href in parser.links:
            if re.match(r'^[a-z]+:|^#', href) or not href.endswith('.html'): continue
            if not (page.parent/href).resolve().exists(): problems.append(f"{name}: link to a missing page {href}")
        for src in parser.srcs:
            if re.match(r'^[a-z]+:|^//', src): continue  # data: URIs (the figures) and remote pictures
            if not (page.parent/unquote(src.split('#')[0].split('?')[0])).resolve().is_file(): problems.append(f"{name}: picture missing {src}")
    for msg in problems: print(f"docs problem: {msg}")
    print(f"docs: {len(nbs)} pages, {figures} figures, {len(problems)} problems")
    return problems

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--check', action='store_true', help='only check the last build')
    args = p.parse_args(argv)
    nbs = notebooks()
    if not args.check: build(nbs)
    return 1 if check(nbs) else 0

if __name__ == '__main__': sys.exit(main())
