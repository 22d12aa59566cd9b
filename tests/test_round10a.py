"""Round 10a's breaks, one table per class (every row failed before its fix):

1. The tar exports (webdataset, bucketed) named a sample's members after the row id, and WebDataset reads
   a key up to the first '.' of a basename: `a.b` and `a.c` came back as one sample, `x.1` with the
   extension `1.png`, `src/a` as a folder; a long id was a traceback; an id twice two samples in one.
2. `diff` read a release's tables unchecked: a repeated or null id, an int image, a list or dict text
   were pandas' tracebacks.
3. `prefilter` handed a reference's null text to pyarrow (a traceback), and named no row for an int or
   list one.
Real files: images, tars read back with the `webdataset` library and the project's own reader, parquet
tables written with pyarrow, a git + DVC repository, commands run as a user runs them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from helpers import REPO, env
from helpers.commands import cli
from helpers.workspace import naming_its_sources
from scripts.lib.errors import DataError


def one_line(result, *words: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    assert all(word in lines[0] for word in words), lines[0]
    return lines[0]


# ---------------------------------------------------------------- 1. one row, one sample, whatever its id
ID_SETS = {
    "two ids sharing a stem before the dot": ["a.b", "a.c", "a"],
    "a version suffix": ["x.1", "x.2", "x.1.png"],
    "folders and dots": ["src/a.b", "src/a.c", "src/a", "../up"],
    "capitals, percent signs and escapes": ["A", "a", "%41", "a%2E1", "a.1"],
    "a long id and non-ASCII": ["é.jpg", "e.jpg", "a." * 100],
}
LAYOUTS = ["webdataset", "bucketed"]


def image_rows(folder: Path, ids: list[str], sizes: list[tuple[int, int]] | None = None) -> pd.DataFrame:
    """One JPEG of its own colour per id (512 px: every bucket keeps it), as files a row names."""
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for n, (row_id, (w, h)) in enumerate(zip(ids, sizes or [(512, 512)] * len(ids))):
        path = folder / f"img{n}.jpg"
        Image.new("RGB", (w, h), ((n * 53) % 256, (n * 101) % 256, 200)).save(path, format="JPEG", quality=95)
        records.append(
            {"id": row_id, "source": "s", "text": f"caption {n}", "orig_text": f"raw {n}", "image": str(path)}
            | {"width": w, "height": h}
        )
    return pd.DataFrame(records)


def export(rows: pd.DataFrame, out: Path, layout: str) -> list[str]:
    from scripts.lib.export import export_options, write_split

    spec = {"format": layout, "shard_size": 2}
    if layout == "bucketed":
        spec["image_mode"] = "passthrough_jpeg"  # the source's bytes: the read-back compares them
    else:
        spec["image_format"] = "keep"
    fmt, options = export_options(spec, "test")
    write_split(rows, out, fmt, options)
    return sorted(str(p) for p in out.rglob("shard-*.tar"))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", ID_SETS)
def test_every_row_reads_back_as_exactly_one_sample_of_its_own(tmp_path, monkeypatch, case, layout):
    import webdataset as wds

    from scripts.lib.archive import iter_samples, open_tar

    monkeypatch.chdir(tmp_path)
    rows = image_rows(tmp_path / "images", ID_SETS[case])
    shards = export(rows, tmp_path / "out", layout)
    expected = {r.id: (Path(r.image).read_bytes(), f"{r.text}\n".encode()) for r in rows.itertuples()}

    def check(samples: list[dict]) -> None:
        assert len(samples) == len(rows) and len({s["__key__"] for s in samples}) == len(rows)
        got = {}
        for sample in samples:
            assert set(sample) - {"__key__", "__url__", "__local_path__"} == {"jpg", "txt", "json"}, sample.keys()
            got[json.loads(sample["json"])["id"]] = (sample["jpg"], sample["txt"])
        assert got == expected  # each id with its own image and caption

    check(list(wds.WebDataset(shards, shardshuffle=False)))
    own = []
    for shard in shards:
        with open_tar(shard) as buf:
            for key, members in iter_samples(buf):  # an UnsafeArchive here would not unpack: none is
                own.append({"__key__": key, **{ext: m.read() for ext, m in members.items()}})
                # the documented rule: no folder, the key up to the one '.' of the name
                assert all("/" not in m.name and m.name.count(".") == 1 for m in members.values())
    check(own)


def test_the_rows_table_locates_each_escaped_sample(tmp_path, monkeypatch):
    from scripts.lib.export import read_rows_table, release_image_bytes, write_rows_table

    monkeypatch.chdir(tmp_path)
    ids = ["a.b", "a.c", "A", "x." * 80]
    rows = image_rows(tmp_path / "images", ids).assign(split="train")
    export(rows, tmp_path / "release" / "train", "webdataset")
    write_rows_table(rows, tmp_path / "release")
    table = read_rows_table(tmp_path / "release")
    assert table["id"].tolist() == ids and table["image"].notna().all()
    for record, row in zip(table.itertuples(), rows.itertuples()):
        assert release_image_bytes(tmp_path / "release", record.image) == Path(row.image).read_bytes()


REPEATS = {  # ids whose keys collide: two rows, one sample
    "the same id twice": (["a", "b", "a"], None),
    "the same dotted id twice, in another shard": (["a.b", "c", "d", "a.b"], None),
    "the same id in two buckets": (["q", "q"], [(512, 512), (768, 512)]),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", REPEATS)
def test_an_id_written_twice_is_refused_never_merged(tmp_path, monkeypatch, case, layout):
    monkeypatch.chdir(tmp_path)
    ids, sizes = REPEATS[case]
    rows = image_rows(tmp_path / "images", ids, sizes)
    with pytest.raises(DataError, match="written twice"):
        export(rows, tmp_path / "out", layout)


# ---------------------------------------------------------------- 2. diff on a release's bad tables
@pytest.fixture(scope="module")
def dvc_template(tmp_path_factory) -> Path:
    """A git repository with DVC and release r1 in params.yaml, copied by each test."""
    root = tmp_path_factory.mktemp("diff") / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True, env=env())
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True, env=env())
    (root / "params.yaml").write_text("releases:\n  r1: {}\n", encoding="utf-8")
    subprocess.run(["git", "add", "-A"], cwd=root, check=True, env=env())
    subprocess.run(["git", "commit", "-q", "-m", "base"], cwd=root, check=True, env=env())
    return root


GOOD_ROWS = {"id": ["a", "b"], "source": ["s1", "s1"], "split": ["train", "validation"], "text": ["x", "y"]}
BAD_ROWS = {  # rows.parquet columns over GOOD_ROWS -> words of the error line
    "a repeated id": ({"id": ["a", "a"], "split": ["train", "train"]}, ["duplicate id 'a'", "row 2"]),
    "a null id": ({"id": ["a", None]}, ["row 2", "'id'", "missing"]),
    "an int id": ({"id": [1, 2]}, ["row 1", "'id'", "int"]),
    "an int image": ({"image": [1, 2]}, ["row 1", "'image'", "int"]),
    "a list text": ({"text": [["x"], ["y"]]}, ["row 1", "'text'", "list"]),
    "a dict text": ({"text": [{"k": "x"}, {"k": "y"}]}, ["row 1", "'text'", "mapping"]),
    "a null source": ({"source": [None, "s1"]}, ["row 1", "'source'", "missing"]),
}
OTHER_TABLES = {  # another table diff reads -> (path, columns, words)
    "removed with an int id": ("data/releases/r1/removed.parquet", {"id": [1], "reason": ["x"]}, ["row 1", "'id'"]),
    "removed with a list reason": (
        "data/releases/r1/removed.parquet",
        {"id": ["z"], "reason": [["cross_dedup"]]},
        ["row 1", "'reason'", "list"],
    ),
    "clusters with a text jaccard": (
        "data/dedup/s1.clusters.parquet",
        {"id": ["z"], "duplicate_of": ["a"], "jaccard": ["high"]},
        ["'jaccard'", "must hold numbers"],  # clusters_table.check_clusters, as dedup-preview and plots
    ),
    "dropped with a null reason": (
        "data/clean/s1.dropped.parquet",
        {"id": ["z", "w"], "reason": ["empty", None]},
        ["row 2", "'reason'", "missing"],
    ),
}
OLD_METADATA = {  # a release before rows.parquet: metadata.jsonl records -> words
    "an int id": ([{"id": 7, "source": "s1", "text": "x", "file_name": "a.png"}], ["row 1", "'id'", "int"]),
    "a list text": ([{"id": "a", "source": "s1", "text": ["x"], "file_name": "a.png"}], ["row 1", "'text'", "list"]),
    "a repeated id": (
        [{"id": "a", "source": "s1", "text": "x", "file_name": f"{n}.png"} for n in range(2)],
        ["duplicate id 'a'", "row 2"],
    ),
}


def diff_repo(template: Path, tmp_path: Path, rows: dict) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(template, repo, symlinks=True)
    (repo / "data" / "releases" / "r1").mkdir(parents=True)
    pq.write_table(pa.table({**rows, "image": rows.get("image", [None] * 2)}), repo / "data/releases/r1/rows.parquet")
    return repo


def diff(repo: Path, monkeypatch, capfd):
    return cli(["diff", "workspace", "workspace"], repo, monkeypatch, capfd)


@pytest.mark.parametrize("case", BAD_ROWS)
def test_diff_names_the_file_and_row_of_a_bad_release_row(dvc_template, tmp_path, monkeypatch, capfd, case):
    columns, words = BAD_ROWS[case]
    repo = diff_repo(dvc_template, tmp_path, {**GOOD_ROWS, **columns})
    one_line(diff(repo, monkeypatch, capfd), "workspace:data/releases/r1/rows.parquet", *words)


@pytest.mark.parametrize("case", OTHER_TABLES)
def test_diff_names_the_file_and_row_of_a_bad_side_table(dvc_template, tmp_path, monkeypatch, capfd, case):
    path, columns, words = OTHER_TABLES[case]
    repo = diff_repo(dvc_template, tmp_path, GOOD_ROWS)
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), repo / path)
    one_line(diff(repo, monkeypatch, capfd), path, *words)


@pytest.mark.parametrize("case", OLD_METADATA)
def test_diff_names_the_record_of_a_bad_old_metadata_file(dvc_template, tmp_path, monkeypatch, capfd, case):
    records, words = OLD_METADATA[case]
    repo = tmp_path / "repo"
    shutil.copytree(dvc_template, repo, symlinks=True)
    for split in ("train", "validation"):
        folder = repo / "data" / "releases" / "r1" / split
        folder.mkdir(parents=True)
        for record in records:
            Image.new("RGB", (4, 4)).save(folder / str(record["file_name"]))
        lines = records if split == "train" else []
        (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    one_line(diff(repo, monkeypatch, capfd), "train/metadata.jsonl", *words)


def test_diff_still_compares_good_rows_and_a_missing_caption(dvc_template, tmp_path, monkeypatch, capfd):
    """The checks refuse nothing diff can compare: a row whose text is null is the same row at both."""
    repo = diff_repo(dvc_template, tmp_path, {**GOOD_ROWS, "text": ["x", None]})
    result = cli(["diff", "workspace", "workspace", "--format", "json"], repo, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["splits"]["validation"]["rows_b"] == 1 and report["splits"]["validation"]["text_changed"] == 0


# ---------------------------------------------------------------- 3. prefilter's reference texts
def prefilter_workspace(root: Path, reference_text: list, own_text: list | None = None) -> Path:
    """Source s with a before_generate cross-dedup against release w of source x, x's text as given."""
    from scripts.lib.io import stable_id

    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["sources"] = {s: {"kind": "text", "path": "raw", "images": "raw", "text_only": True} for s in ("s", "x")}
    step = {"dedup": {"scope": "against", "before_generate": True, "reference": "w", "against": "train"}}
    params["releases"] = {
        "w": {"components": [{"source": "x", "split": "all", "into": "train"}]},
        "v": {"components": [{"source": "s", "split": "all", "into": "train", "steps": [step]}]},
    }
    (root / "raw").mkdir(parents=True)
    (root / "data" / "dedup").mkdir(parents=True)
    params = naming_its_sources(params, keep={"releases"})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    for source, texts in (("s", own_text or ["a red fox", "a blue dog"]), ("x", reference_text)):
        n = len(texts)
        table = {
            "id": [stable_id(source, i) for i in range(n)],
            "source": [source] * n,
            "prompt": [f"prompt {i}" for i in range(n)],
            "split": pa.nulls(n, pa.string()),
            "text": texts,
        }
        pq.write_table(pa.table(table), root / "data" / "dedup" / f"{source}.parquet")
    return root


PREFILTER = {  # (reference texts, s's own texts) -> the file and the words of the line
    "a null reference text": (["a red fox", None], None, "x.parquet", ["row 2", "'text'", "missing"]),
    "an int reference text": ([1, 2], None, "x.parquet", ["row 1", "'text'", "int"]),
    "a list reference text": ([["a red fox"], ["b"]], None, "x.parquet", ["row 1", "'text'", "list"]),
    "a null text of the source itself": (["a red fox"], ["a red fox", None], "s.parquet", ["row 2", "'text'"]),
}


@pytest.mark.parametrize("case", PREFILTER)
def test_prefilter_names_the_file_and_row_of_a_bad_text(tmp_path, monkeypatch, capfd, case):
    reference, own, name, words = PREFILTER[case]
    root = prefilter_workspace(tmp_path / "ws", reference, own)
    argv = ["prefilter", "s", "data/dedup/s.parquet", "data/prefilter/s.parquet"]
    one_line(cli(argv, root, monkeypatch, capfd), f"data/dedup/{name}", *words)
    assert not (root / "data" / "prefilter").exists() or not list((root / "data" / "prefilter").iterdir())


@pytest.mark.parametrize(
    "reference, at",
    [(["a red fox", float("nan")], "text 2"), ([3, "a"], "text 1"), (["a", "b", ["c"]], "text 3")],
)
def test_dedup_against_names_the_text_it_cannot_read(reference, at):
    """The library call itself: a text that is not a string is a one-line DataError naming its place."""
    from scripts.lib.dedup import dedup_against

    with pytest.raises(DataError, match=at):
        dedup_against(["a red fox"], reference)


# ---------------------------------------------------------------- sibling: compose's generation list ids
ORDER_IDS = {  # the `id` column of data/prefilter/S.parquet -> the words of compose's one line
    "list ids": (pa.array([[f"{i}"] for i in range(8)]), ["row 1", "'id'", "list"]),
    "a null id": (pa.array(["a", None, *"cdefgh"]), ["row 2", "'id'", "missing"]),
    "int ids": (pa.array(range(8)), ["row 1", "'id'", "int"]),
}


@pytest.mark.parametrize("case", ORDER_IDS)
def test_compose_names_the_row_of_a_bad_id_in_the_generation_list(tmp_path, monkeypatch, capfd, case):
    from helpers.workspace import make_splits, write_params

    monkeypatch.chdir(tmp_path)
    release = {"components": [{"source": "diffusiondb", "split": "all", "into": "same", "rows": [0, 4]}]}
    write_params(tmp_path, releases={"r": {**release, "export": "imagefolder"}})
    make_splits(tmp_path, n=8)
    ids, words = ORDER_IDS[case]
    (tmp_path / "data" / "prefilter").mkdir(parents=True)
    pq.write_table(pa.table({"id": ids, "position": range(8)}), tmp_path / "data/prefilter/diffusiondb.parquet")
    argv = ["compose", "r", "data/splits", "data/compose/r", "--positions", "data/prefilter"]
    one_line(cli(argv, tmp_path, monkeypatch, capfd), "data/prefilter/diffusiondb.parquet", *words)
    assert not (tmp_path / "data" / "compose").exists()
