"""Round 37c: dedup-preview bounded per cluster, sample-data refusing a foreign folder before its work.

1. dedup-preview and the dedup stage's page capped the clusters shown (preview.dedup_clusters), not the rows of one: a cluster of
   100,000 removed rows was a 12.6 MB page of 100,001 table rows (8.9 s, 286 MB; 10^6 rows: ~126 MB). A
   cluster now shows its ROWS_SHOWN most similar removed rows, its caption telling its size and how many
   more (13.6 KB, 6.7 s, 196 MB on the same input), cut in Arrow (only the rows shown become objects).
2. sample-data refused a data/raw holding a file it does not write only at its final rename, after writing
   the whole sample into a temp folder beside it (a disk too small for the sample said "File too large" or
   "No space left", never the folder's own reason). The folder is now checked against SAMPLE_FILES first; a
   file of those names with other bytes is still proved by the bytes written, at the rename.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.commands import cli
from helpers.trees import bytes_copy
from helpers.workspace import error_line

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------- 1. dedup-preview: rows of one cluster bounded


def write_dedup(root: Path, sizes: list[int]) -> None:
    """data/clean, data/dedup and the clusters table of source `s`: cluster k keeps `k{k}` and removes sizes[k]."""
    for sub in ("clean", "dedup"):
        (root / "data" / sub).mkdir(parents=True)
    kept = [f"k{k}" for k in range(len(sizes))]
    removed = [
        (f"k{k}", f"r{k}-{i:06d}", round(0.7 + (i % 29) / 100, 2)) for k, n in enumerate(sizes) for i in range(n)
    ]
    rows = {
        "id": kept + [r for _, r, _ in removed],
        "text": [f"a red fox {i}" for i in range(len(kept) + len(removed))],
    }
    pq.write_table(pa.table(rows), root / "data" / "clean" / "s.parquet")
    pq.write_table(pa.table({"id": kept, "text": ["a red fox"] * len(kept)}), root / "data" / "dedup" / "s.parquet")
    clusters = {
        "id": [r for _, r, _ in removed],
        "duplicate_of": [k for k, _, _ in removed],
        "jaccard": [j for *_, j in removed],
    }
    pq.write_table(pa.table(clusters), root / "data" / "dedup" / "s.clusters.parquet")
    (root / "params.yaml").write_text("preview:\n  dedup_clusters: 20\n", encoding="utf-8")


BIG_CLUSTERS = {  # case: (removed rows per cluster, captions the page must show)
    "one cluster of 150": ([150], ["cluster 1: 151 rows; the 100 most similar removed rows shown, and 50 more"]),
    "one of 5,000": ([5000], ["cluster 1: 5,001 rows; the 100 most similar removed rows shown, and 4,900 more"]),
    "a big one beside small ones": (
        [3, 2000, 101],
        [
            "cluster 1: 2,001 rows; the 100 most similar removed rows shown, and 1,900 more",
            "cluster 2: 102 rows; the 100 most similar removed rows shown, and 1 more",
            "cluster 3: 4 rows",
        ],
    ),
}


@pytest.mark.parametrize("case", BIG_CLUSTERS)
def test_a_big_cluster_shows_its_most_similar_rows_and_how_many_more(tmp_path, monkeypatch, capfd, case):
    sizes, captions = BIG_CLUSTERS[case]
    write_dedup(tmp_path, sizes)
    result = cli(["dedup-preview", "s", "--output", "p.html"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "p.html").read_text(encoding="utf-8")
    assert re.findall(r"<caption>(.*?)</caption>", page) == captions
    assert page.count('<td class="removed">') == sum(min(n, 100) for n in sizes)
    first = page.split('id="cluster-1"')[1].split("</table>")[0]
    shown = [float(j) for j in re.findall(r'<td class="jaccard">([0-9.]+)</td>', first)]
    assert shown == sorted(shown, reverse=True) and shown[0] == 0.98  # the most similar first


# ---------------------------------------------------------------- 2. sample-data: a foreign data/raw refused first


def sample_copy(tmp_path: Path) -> Path:
    """A data/raw as a clone has it: the committed sample's bytes, no extended attribute."""
    return bytes_copy(ROOT / "data" / "raw", tmp_path / "raw")


FOREIGN = {  # case: (what the user added under data/raw, the name the refusal gives, extra argv)
    "notes at its top": ("notes.txt", "notes.txt", []),
    "a table in a source's folder": ("diffusiondb/mine.parquet", "diffusiondb/mine.parquet", []),
    "an empty folder of the user's": ("scratch/", "scratch/", []),
    "another seed, a file in a deeper folder": (
        "gustavosta/data/extra.csv",
        "gustavosta/data/extra.csv",
        ["--seed", "7"],
    ),
}


@pytest.mark.parametrize("case", FOREIGN)
def test_a_foreign_data_raw_is_refused_before_the_sample_is_written(tmp_path, monkeypatch, capfd, case):
    import scripts.tools.sample_data as sample_data

    added, named, argv = FOREIGN[case]
    raw = sample_copy(tmp_path)
    (raw / added).parent.mkdir(parents=True, exist_ok=True)
    (raw / added).mkdir() if added.endswith("/") else (raw / added).write_text("mine\n", encoding="utf-8")
    written = []
    monkeypatch.setattr(sample_data, "write_all", lambda output, seed=0: written.append(output))
    result = cli(["sample-data", str(raw), *argv], tmp_path, monkeypatch, capfd)
    assert result.returncode == 2 and written == []  # before the work: no sample written to a temp folder
    assert f"holds '{named}', which this command did not write" in error_line(result.stderr)
    assert (raw / added).exists() and sorted(os.listdir(tmp_path)) == ["raw"]


def test_the_sample_writes_exactly_its_listed_files(tmp_path):
    from scripts.lib.marks import files_under
    from scripts.tools.sample_data import SAMPLE_FILES, write_all

    write_all(tmp_path / "a", 7)
    assert sorted(files_under(tmp_path / "a")) == sorted(SAMPLE_FILES)


@pytest.mark.slow
def test_a_foreign_data_raw_on_a_small_disk_is_told_as_foreign(tmp_path):
    """A real run limited to 4 KiB per file (ulimit -f): it said "File too large", writing the sample first."""
    raw = sample_copy(tmp_path)
    (raw / "notes.txt").write_text("mine\n", encoding="utf-8")
    run = subprocess.run(
        [sys.executable, "-m", "scripts", "sample-data", str(raw)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)),
        timeout=120,
    )
    assert run.returncode == 2 and "holds 'notes.txt', which this command did not write" in error_line(run.stderr)
