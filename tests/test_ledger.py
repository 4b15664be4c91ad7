"""tools/ledger.py: one `judge` gives every verdict of the claims ledger, for both kinds of claim (pre-trained against
the same seeds at random init, and one setting against another); the seeds are summarized by masklab.sweep."""
import importlib.util, json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def ledger():
    spec = importlib.util.spec_from_file_location('ledger', ROOT/'tools'/'ledger.py')
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); return m

def test_judge_every_verdict():
    j = ledger().judge
    lo, hi = [0.30, 0.31, 0.32], [0.50, 0.51, 0.52]
    wide, wide_lo = [0.50, 0.60, 0.70], [0.35, 0.40, 0.55]  # means 0.6 and 0.43, apart by more than the spread; seeds overlap
    assert j(hi, lo, 'other') == 'reproduced in direction'
    assert j(wide, wide_lo, 'other') == 'reproduced in direction on the means (the seeds overlap)'
    assert j(lo, lo, 'other') == 'not reproduced at this scale: the difference is within the seed spread'
    assert j(lo, hi, 'other') == 'contradicted at this scale: other is better on every seed'
    assert j(wide_lo, wide, 'other') == 'contradicted on the means at this scale (other is better; the seeds overlap)'
    assert j(lo, hi, 'other', 'lower') == 'reproduced in direction'  # e.g. a collapse measure: lower is the win
    assert j(lo, lo, 'other', 'no_worse') == 'reproduced: at least as good, within the seed spread'
    assert j(lo, hi, 'other', 'no_worse') == 'not reproduced at this scale: other is better by 20.0'
    assert j(hi[:2], lo, 'other') == 'not enough seeds (2 of 3)'
    # pre-trained against the same seeds at random init: 'every seed' is every pair
    assert j(hi, lo, 'random init', paired=True) == 'reproduced in direction'
    assert j([0.30, 0.35, 0.40], [0.31, 0.32, 0.33], 'random init', paired=True) == \
        'not reproduced at this scale: the gain is within the seed spread'
    assert j(lo, hi, 'from scratch', paired=True) == 'not reproduced at this scale: pre-training does not beat from scratch'

def test_claim_from_results(tmp_path):
    "A pre-trained claim read from a results table: every seed, the baseline, raw pixels and the verdict"
    lg = ledger(); lg.ROOT = tmp_path
    rows = [dict(id=str(i), knn=a, init_knn=b, pixels_knn=0.9) for i, (a, b) in enumerate(zip([0.5, 0.51, 0.52], [0.3, 0.31, 0.32]))]
    (tmp_path/'sweep').mkdir(); (tmp_path/'sweep'/'results.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    c = dict(results='sweep/results.jsonl', metric='knn', baseline='init_knn', reference='pixels_knn')
    assert lg.verdict(c) == ('51.0 ± 1.0 (seeds: 50.0, 51.0, 52.0) vs random init 31.0 ± 1.0, raw pixels 90.0',
                             'reproduced in direction; below raw pixels at this scale')
    # above raw pixels only when every seed is: one seed below leaves the verdict without a word on pixels
    for pix, tail in ((0.45, '; above raw pixels on every seed'), (0.505, '')):
        rows = [dict(r, pixels_knn=pix) for r in rows]
        (tmp_path/'sweep'/'results.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
        assert lg.verdict(c)[1] == 'reproduced in direction' + tail
