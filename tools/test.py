#!/usr/bin/env python
"""masklab's whole test suite, the command README.md gives and CI runs.

1. notebooks and `masklab/` are in sync: `nbdev-export` and `nbdev-clean` change no file;
2. README.md matches nbs/index.ipynb (`tools/readme.py --check`), whose claims ledger matches results/ (`tools/ledger.py --check`);
3. every notebook runs under `nbdev-test` (IN_TEST=1; `#| slow` and `#| gpu` cells skipped unless `--flags`);
4. the docs build offline from the committed notebooks and every page checks out (`tools/build_docs.py`);
5. `pytest tests/` (with the notebook hygiene checks and the real-browser widget tests).
It ends with one line, `masklab tests: N passed, N failed`, counting checks, notebooks and pytest tests.
"""
import argparse, hashlib, os, re, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

def tool(name): return str(BIN/name) if (BIN/name).exists() else name

def snapshot():
    "Hash of every file that nbdev-export or nbdev-clean may write"
    files = [p for d in ('masklab', 'nbs') for p in (ROOT/d).rglob('*')
             if p.is_file() and '__pycache__' not in p.parts and '.ipynb_checkpoints' not in p.parts]
    return {str(p.relative_to(ROOT)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}

def notebooks():
    return sorted(p for p in (ROOT/'nbs').rglob('*.ipynb') if not any(s.startswith(('_', '.')) for s in p.relative_to(ROOT/'nbs').parts))

def step(title):
    print(f"\n=== {title}", flush=True)
    return time.perf_counter()

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--flags', default='', help='nbdev-test flags to run, e.g. "slow" or "gpu"')
    p.add_argument('--skip-notebooks', action='store_true', help='only the sync checks and pytest')
    args = p.parse_args(argv)
    os.chdir(ROOT)
    passed, failed, failures, t0 = 0, 0, [], time.perf_counter()

    t = step("notebooks and masklab/ in sync (nbdev-export, nbdev-clean change nothing)")
    before = snapshot()
    ok = subprocess.run([tool('nbdev-export')]).returncode == 0 and subprocess.run([tool('nbdev-clean')]).returncode == 0
    after = snapshot()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if ok and not changed: passed += 1; print(f"in sync ({time.perf_counter()-t:.0f}s)")
    else:
        failed += 1; failures.append('sync')
        print("nbdev-export / nbdev-clean changed:\n  " + "\n  ".join(changed) + "\nreview with `git diff` and commit them")

    t = step("README.md matches nbs/index.ipynb")
    if all(subprocess.run([sys.executable, str(ROOT/'tools'/t), '--check']).returncode == 0 for t in ('ledger.py', 'readme.py')): passed += 1
    else: failed += 1; failures.append('readme')

    if not args.skip_notebooks:
        nbs = notebooks()
        t = step(f"nbdev-test: {len(nbs)} notebooks" + (f" with flags {args.flags!r}" if args.flags else ''))
        cmd = [tool('nbdev-test'), '--timing'] + (['--flags', args.flags] if args.flags else [])
        r = subprocess.run(cmd, stderr=subprocess.PIPE, text=True)
        sys.stderr.write(r.stderr)
        bad = set(re.findall(r'^\t(\S+\.ipynb)$', r.stderr, re.M))
        if r.returncode != 0 and not bad: bad = {'nbdev-test'}
        passed += len(nbs) - len(bad & {p.name for p in nbs}); failed += len(bad)
        failures += sorted(bad)
        print(f"notebooks: {len(nbs) - len(bad)} passed, {len(bad)} failed ({time.perf_counter()-t:.0f}s)")

    t = step("docs: offline HTML build of the notebooks and its check (tools/build_docs.py)")
    if subprocess.run([sys.executable, str(ROOT/'tools'/'build_docs.py')]).returncode == 0: passed += 1
    else: failed += 1; failures.append('docs')

    t = step("pytest tests/")
    junit = ROOT/'.pytest_cache'/'junit.xml'
    r = subprocess.run([sys.executable, '-m', 'pytest', 'tests', '-q', '--durations=15', f'--junitxml={junit}'])  # the slowest tests, named
    if r.returncode not in (0, 1, 5): failed += 1; failures.append(f'pytest (exit {r.returncode})')
    elif junit.exists():
        head = junit.read_text()[:2000]
        get = lambda k: int(re.search(rf'{k}="(\d+)"', head).group(1))
        n, nfail, nerr, nskip = get('tests'), get('failures'), get('errors'), get('skipped')
        passed += n - nfail - nerr - nskip; failed += nfail + nerr
        if nfail + nerr: failures.append('pytest')

    print(f"\nwhole suite: {time.perf_counter()-t0:.0f}s" + (f"; failed: {', '.join(failures)}" if failures else ''))
    print(f"masklab tests: {passed} passed, {failed} failed")
    return 1 if failed else 0

if __name__ == '__main__': sys.exit(main())
