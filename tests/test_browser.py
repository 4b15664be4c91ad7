"""Real-browser tests of the lessons' widgets: JupyterLab + Debian's Chromium, driven by Playwright.

For each lesson with a live widget (locality: `MaskExplorer`, light head: `ReconstructionExplorer`), the test
copies the lesson notebook into a temporary folder, cut down to what the widget needs (the lesson's own `#| export`
definitions and imports, the widget cell, and the cells that define the names it uses; see `widget_cells`), starts
JupyterLab on 127.0.0.1 (a free port, no token), opens the copy in headless Chromium, runs all its cells (with
`IN_TEST=1`, as under `nbdev-test`), drags the widget's **mask ratio** slider with the mouse, and asserts that the
slider moved, that the screenshot of the widget's figure changed, and that no cell and no widget callback raised.
The server is stopped by its process id. A lesson's live widget is the code cell right after a markdown cell that
starts with "The live widget".

Chromium comes from Debian (`apt-get install -y chromium chromium-driver`), never from `playwright install`.
Without it (or without playwright) the tests are skipped with a message saying how to install it; when the
environment variable `CI` is set, a missing browser is a failure instead, so CI cannot pass without running them.
"""
import ast, hashlib, json, os, re, signal, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get('MASKLAB_CHROMIUM', '/usr/bin/chromium')
FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
         '--disable-sync', '--no-first-run']
LESSONS = ['02_locality', '04_light_head'] # the lessons whose live widget is driven here
SKIP_RE = re.compile(r'^#\|\s*(slow|gpu)\b', re.M)

def _missing():
    "Why the browser test cannot run here, or None"
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} not found: install Debian's Chromium with `apt-get install -y chromium chromium-driver`"
    try: import playwright.sync_api # noqa: F401
    except ImportError: return "playwright is not installed: `pip install -e '.[dev]'`"
    return None

@pytest.fixture(scope='module')
def browser_env():
    why = _missing()
    if why:
        if os.environ.get('CI'): pytest.fail(f"browser test cannot run in CI: {why}")
        pytest.skip(why)

def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

MARK = 'The live widget' # a lesson's live widget is the code cell right after a markdown cell starting with this

def _names(src):
    "(names a cell assigns, names it reads); IPython magics and shell lines are ignored"
    tree = ast.parse('\n'.join(l for l in src.splitlines() if not l.lstrip().startswith(('%', '!'))))
    stored, loaded = set(), set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Name): (stored if isinstance(n.ctx, ast.Store) else loaded).add(n.id)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)): stored.add(n.name)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            stored |= {(a.asname or a.name).split('.')[0] for a in n.names}
    return stored, loaded

def widget_cells(cells):
    """Indices of the code cells the lesson's live widget needs: every `#| export` cell and every cell of imports (the
    lesson's own definitions), the widget cell itself, and, walking back from it, the nearest cell that assigns each
    other name the widget cell (or a cell kept for it) reads. `#| slow` and `#| gpu` cells are never kept."""
    code = [i for i, c in enumerate(cells) if c.cell_type == 'code' and not SKIP_RE.search(c.source)]
    marks = [i + 1 for i, c in enumerate(cells[:-1]) if c.cell_type == 'markdown' and c.source.startswith(MARK)]
    if len(marks) != 1 or marks[0] not in code:
        raise AssertionError(f"expected one markdown cell starting with {MARK!r} followed by a code cell; found {len(marks)}")
    w = marks[0]
    def always(c):
        if re.search(r'^#\|\s*export', c.source, re.M): return True
        body = [l for l in c.source.splitlines() if l.strip() and not l.lstrip().startswith('#')]
        return bool(body) and all(l.startswith(('import ', 'from ')) for l in body)
    keep = {i for i in code if i < w and always(cells[i])}
    defined = set().union(*(_names(cells[i].source)[0] for i in keep))
    stored, need = _names(cells[w].source)
    need -= defined | stored
    keep.add(w)
    for i in reversed([i for i in code if i < w and i not in keep]):
        stored, loaded = _names(cells[i].source)
        if stored & need: # the nearest assignment before the use is the one that counts
            keep.add(i); need = (need - stored) | (loaded - defined - stored)
    return sorted(keep)

def lesson_copy(stem, folder:Path) -> Path:
    "The lesson notebook cut down to what its live widget needs (see `widget_cells`), without outputs, in `folder`"
    import nbformat
    nb = nbformat.read(ROOT/'nbs'/f'{stem}.ipynb', as_version=4)
    nb.cells = [nb.cells[i] for i in widget_cells(nb.cells)]
    for c in nb.cells: c.outputs, c.execution_count = [], None
    nb.metadata.pop('widgets', None)
    nbformat.write(nb, folder/f'{stem}.ipynb')
    return folder/f'{stem}.ipynb'

@pytest.fixture(scope='module')
def lab(browser_env, tmp_path_factory):
    "A JupyterLab server on 127.0.0.1 serving a temporary folder: yields (url, folder); stopped by its PID"
    folder = tmp_path_factory.mktemp('lab')
    home = tmp_path_factory.mktemp('lab-home')
    port = _free_port()
    env = dict(os.environ, IN_TEST='1', JUPYTER_CONFIG_DIR=str(home/'config'), JUPYTER_RUNTIME_DIR=str(home/'runtime'),
               MPLBACKEND='module://matplotlib_inline.backend_inline', PYTHONPATH=str(ROOT))
    cmd = [sys.executable, '-m', 'jupyterlab', '--no-browser', '--ip=127.0.0.1', f'--port={port}', '--port-retries=0',
           f'--ServerApp.root_dir={folder}', "--IdentityProvider.token=", "--ServerApp.password=",
           '--ServerApp.disable_check_xsrf=True', '--LabApp.expose_app_in_browser=True',
           f'--LabApp.workspaces_dir={home/"workspaces"}', f'--LabApp.user_settings_dir={home/"settings"}']
    if hasattr(os, 'geteuid') and os.geteuid() == 0: cmd.append('--allow-root')
    log = open(home/'lab.log', 'wb')
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    url = f'http://127.0.0.1:{port}'
    try:
        deadline = time.time() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {proc.returncode}:\n{(home/'lab.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f'{url}/api/status', timeout=2) as r:
                    if r.status == 200: break
            except OSError: pass
            if time.time() > deadline: pytest.fail(f"JupyterLab did not answer on {url} within 60 s")
            time.sleep(0.5)
        yield url, folder
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try: proc.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL); proc.wait()
        log.close()

@pytest.fixture(scope='module')
def page(lab, tmp_path_factory):
    from playwright.sync_api import sync_playwright
    profile = tmp_path_factory.mktemp('chromium-profile')
    with sync_playwright() as pw:
        # a fresh profile folder (playwright passes it to Chromium as --user-data-dir)
        ctx = pw.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, headless=True, args=FLAGS,
                                                    viewport={'width': 1400, 'height': 1000})
        try: yield ctx.pages[0] if ctx.pages else ctx.new_page()
        finally: ctx.close()

def _errors(path:Path):
    "The error outputs of a saved notebook: (cell index, ename, evalue)"
    nb = json.loads(path.read_text())
    return [(i, o.get('ename'), o.get('evalue')) for i, c in enumerate(nb['cells']) if c['cell_type'] == 'code'
            for o in c.get('outputs', []) if o.get('output_type') == 'error']

def _run_all(page, name, timeout_s):
    "Run every cell of notebook `name` (the current one) and wait until the kernel is idle with every cell executed or one raised"
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    deadline, state = time.time() + timeout_s, None
    while time.time() < deadline:
        state = page.evaluate("""name => {
            const w = window.jupyterapp.shell.currentWidget;
            if (!w || !w.content || !w.sessionContext || w.context.path !== name) return null;
            const cells = w.content.widgets.filter(c => c.model.type === 'code');
            const pending = cells.filter(c => c.model.executionCount === null || c.promptNode?.textContent.includes('*')).length;
            const errors = cells.filter(c => c.model.outputs.toJSON().some(o => o.output_type === 'error')).length;
            return {status: w.sessionContext.session?.kernel?.status, pending, errors, n: cells.length};
        }""", name)
        if state and state['status'] == 'idle' and (state['pending'] == 0 or state['errors']): return state
        time.sleep(1)
    raise AssertionError(f"cells still pending after {timeout_s} s: {state}")

@pytest.mark.parametrize('stem', LESSONS)
def test_widget_responds_in_jupyterlab(page, lab, stem):
    url, folder = lab
    try: _drive(page, url, folder, stem)
    except BaseException:
        shot = folder/f'{stem}-failure.png'
        try: page.screenshot(path=str(shot), full_page=True); (folder/f'{stem}-failure.html').write_text(page.content())
        except Exception: pass
        print(f"browser state at the failure: {shot} (and .html beside it)")
        raise

def _drive(page, url, folder, stem):
    nb = lesson_copy(stem, folder)
    if page.url.startswith(url): # a notebook of an earlier test is open: close it (and its kernel's tab) first
        page.evaluate("window.jupyterapp.commands.execute('application:close-all')")
    page.goto(f'{url}/lab/tree/{nb.name}')
    page.wait_for_selector('.jp-Notebook .jp-Cell', timeout=60_000)
    # wait for *this* notebook to be the current one, with its kernel started and idle
    page.wait_for_function("""name => { const w = window.jupyterapp.shell.currentWidget;
        return w && w.context && w.context.path === name && w.sessionContext
               && w.sessionContext.session?.kernel?.status === 'idle'; }""", arg=nb.name, timeout=60_000)
    _run_all(page, nb.name, 120)
    page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")
    time.sleep(1)
    assert _errors(nb) == [], f"{stem}: cells raised in JupyterLab"

    # the lesson's live widget: an ipywidgets `interactive` (controls + an output area holding the figure)
    box = page.locator('.widget-interact').last
    box.scroll_into_view_if_needed()
    figure = box.locator('.widget-output img').first
    figure.wait_for(timeout=30_000)
    before = hashlib.sha256(figure.screenshot()).hexdigest()
    slider = box.locator('.widget-slider', has_text='mask ratio').first
    handle = slider.locator('.noUi-handle').first
    value0 = float(handle.get_attribute('aria-valuenow'))
    lo, hi = float(handle.get_attribute('aria-valuemin')), float(handle.get_attribute('aria-valuemax'))
    dx = 60 if value0 <= (lo + hi) / 2 else -60 # drag toward the side with room
    b = handle.bounding_box()
    page.mouse.move(b['x'] + b['width'] / 2, b['y'] + b['height'] / 2)
    page.mouse.down()
    page.mouse.move(b['x'] + b['width'] / 2 + dx, b['y'] + b['height'] / 2, steps=5)
    page.mouse.up()
    value1 = float(handle.get_attribute('aria-valuenow'))
    assert value1 != value0, f"{stem}: dragging the mask ratio slider did not move it (still {value0})"
    deadline, after = time.time() + 60, before
    while time.time() < deadline and after == before:
        time.sleep(0.5)
        img = box.locator('.widget-output img').first
        if img.count(): after = hashlib.sha256(img.screenshot()).hexdigest()
    assert after != before, (f"{stem}: the figure did not change within 60 s after the mask ratio slider moved from "
                             f"{value0} to {value1}: the widget stopped responding")
    # an exception in the widget's callback is printed into its output area, not into the cell's outputs
    tb = box.locator('.widget-output [data-mime-type="application/vnd.jupyter.stderr"]')
    assert tb.count() == 0, f"{stem}: the widget's callback raised:\n{tb.first.inner_text()[:2000]}"
    page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")
    time.sleep(1)
    assert _errors(nb) == [], f"{stem}: moving the slider raised"

def test_widget_cells_keep_what_the_widget_needs():
    "The cut-down copy (no browser needed): the widget cell, the cells defining its names, no slow cells"
    import nbformat
    for stem in LESSONS:
        cells = nbformat.read(ROOT/'nbs'/f'{stem}.ipynb', as_version=4).cells
        kept = [cells[i] for i in widget_cells(cells)]
        assert 'Explorer' in kept[-1].source or kept[-1].source.strip().isidentifier(), kept[-1].source
        assert not any(SKIP_RE.search(c.source) for c in kept)
        assert len(kept) < len([c for c in cells if c.cell_type == 'code'])
    cells = nbformat.read(ROOT/'nbs'/'04_light_head.ipynb', as_version=4).cells
    assert any(cells[i].source.startswith('demo = load_simmim()') for i in widget_cells(cells))
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    with pytest.raises(AssertionError, match='expected one markdown cell'): widget_cells([md('# no widget'), code('x = 1')])
    toy = [code('import math'), code('a = 1'), code('b = 2'), md(MARK + ': try it'), code('a + math.pi')]
    assert widget_cells(toy) == [0, 1, 4]
