"""Peak memory of diff's row comparison: the whole-table comparison (before round 43c) or diff_rows' merge.

    python benchmarks/diff_memory_bench.py [--rows 1000000] [--out FILE]

Round 43c: diff.compare set both releases' rows as indexed frames, copied them split by split, and sorted
every added and removed id in Python. This builds two snapshots of N rows (B drops every 7th row of A,
adds N/7 new ones and rewrites every 11th caption) in a fresh child per mode (peak RSS is a high-water mark:
one process cannot measure two runs), then compares them: the whole-table comparison as it was (copied
below) and diff.compare as shipped. Printed: the child's peak RSS (os.wait4) and how much the comparison
raised it over the snapshots alone (getrusage before and after), and the ratio of the two raises.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._peak_rss import run_child
from benchmarks._record import add_out_argument, record

CHILD = r"""
import resource, sys
import pandas as pd
from scripts.tools import diff, diff_rows

def snapshots(n):
    ids = [f"id{i:09d}" for i in range(n)]
    a = pd.DataFrame({"id": ids, "source": ["s" + str(i % 3) for i in range(n)],
                      "split": ["validation" if i % 10 == 0 else "train" for i in range(n)],
                      "text": [f"a caption of row {i} " * 4 for i in range(n)]})
    keep = a[a.index % 7 != 0]
    extra = pd.DataFrame({"id": [f"new{i:09d}" for i in range(n // 7)], "source": "s9", "split": "train",
                          "text": [f"a new caption {i}" for i in range(n // 7)]})
    b = pd.concat([keep, extra], ignore_index=True)
    b.loc[b.index % 11 == 0, "text"] = "rewritten"
    return diff.Snapshot("A", "r", a, pd.DataFrame(), {}), diff.Snapshot("B", "r", b, pd.DataFrame(), {})

def whole(a, b, explain):  # diff.compare before round 43c (its leaks_b part is unchanged: left out of both)
    a_rows, b_rows = a.rows.set_index("id"), b.rows.set_index("id")
    report = {}
    for split in ("train", "validation"):
        old, new = a_rows[a_rows["split"] == split], b_rows[b_rows["split"] == split]
        added, removed = new.index.difference(old.index), old.index.difference(new.index)
        both = old.index.intersection(new.index)
        before, after = old.loc[both, "text"], new.loc[both, "text"]
        changed = both[((before != after) & ~(before.isna() & after.isna())).to_numpy()]
        images = [i for i in both if diff_rows.image_changed(a.image_md5.get(i), b.image_md5.get(i))]
        reasons = pd.Series({i: explain.get(i, "recipe") for i in removed}, dtype=object)
        report[split] = (len(added), len(removed), len(changed), len(images), sorted(added), sorted(removed),
                         new.loc[added, "source"].value_counts(), old.loc[removed, "source"].value_counts(),
                         reasons.str.split(" ").str[0].value_counts() if len(reasons) else {},
                         sorted(changed)[:5])
    return {s: r[:4] for s, r in report.items()}

def merged(a, b, explain):
    splits = diff_rows.compare_rows(diff_rows.rows_by_id(a.rows, a.image_md5), diff_rows.rows_by_id(b.rows, b.image_md5), explain)
    return {s: (len(d.added_ids), len(d.removed_ids), d.text_changed, d.image_changed) for s, d in splits.items()}

a, b = snapshots(int(sys.argv[2]))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
counts = (whole if sys.argv[1] == "whole" else merged)(a, b, {})
raise_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(raise_kb, counts)
"""


def measure(mode: str, rows: int) -> tuple[float, float, float, str]:
    """(peak RSS MB, the comparison's raise of it MB, seconds, its counts) of one child."""
    run = run_child([sys.executable, "-c", CHILD, mode, str(rows)])
    if run.exit_code != 0:
        raise SystemExit(f"{mode}: exit {run.exit_code}: {run.stderr}")
    raise_kb, _, counts = run.stdout.strip().partition(" ")
    return run.peak_mib, int(raise_kb) / 1024, run.seconds, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    add_out_argument(parser)
    args = parser.parse_args()
    record(args.out)
    results = {mode: measure(mode, args.rows) for mode in ("whole", "merged")}
    for mode, (peak, raised, seconds, counts) in results.items():
        print(f"{mode:6s} rows={args.rows}: peak {peak:.0f} MB, comparison +{raised:.0f} MB, {seconds:.1f} s; {counts}")
    if results["whole"][3] != results["merged"][3]:
        raise SystemExit("the two comparisons disagree")
    ratio = results["whole"][1] / max(results["merged"][1], 1)
    print(f"comparison's memory, whole-table / merged: {ratio:.1f}x")


if __name__ == "__main__":
    main()
