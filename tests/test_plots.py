"""The plots stage: data files behind `dvc plots show`, one file per question covering every
release or source, with the fields dvc.yaml's `plots:` declares."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from helpers import cli, run
from scripts.lib.errors import DataError
from scripts.lib.tables import write_parquet
from scripts.plots import PLOT_FILES, dedup_cluster_sizes, prompt_lengths, source_mix

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
RELEASES = ["v2", "v3", "v4", "v4-a", "v4-b"]


def read_csv(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def declared_plots() -> dict[str, dict]:
    """dvc.yaml's top-level `plots:` as {file: {x, y, template, ...}}."""
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))
    return {name: props for entry in spec["plots"] for name, props in entry.items()}


# --- pure tables ---------------------------------------------------------------------------------


def test_prompt_lengths_bins_every_row_and_lists_empty_bins():
    rows = pd.DataFrame(
        {
            "release": ["v1"] * 4 + ["v2"],
            "split": ["train"] * 3 + ["validation"] * 2,
            "source": "s",
            "text": ["x" * 3, "x" * 17, "x" * 40, "x" * 10, "x" * 16],
        }
    )
    table = prompt_lengths(rows, 16)
    train = table[(table.release == "v1") & (table.split == "train")]
    assert train["chars"].tolist() == [0, 16, 32] and train["rows"].tolist() == [1, 1, 1]
    assert table.groupby(["release", "split"])["rows"].sum().to_dict() == {
        ("v1", "train"): 3,
        ("v1", "validation"): 1,
        ("v2", "validation"): 1,
    }
    with pytest.raises(DataError, match="preview.length_bin"):
        prompt_lengths(rows, 0)


def test_source_mix_shares_sum_to_one_per_release_and_split():
    rows = pd.DataFrame(
        {
            "release": ["v1"] * 5,
            "split": ["train"] * 4 + ["validation"],
            "source": ["a", "a", "a", "b", "b"],
            "text": "t",
        }
    )
    table = source_mix(rows)
    assert table.to_dict("records") == [
        {"release": "v1", "split": "train", "source": "a", "rows": 3, "share": 0.75, "panel": "v1 / train"},
        {"release": "v1", "split": "train", "source": "b", "rows": 1, "share": 0.25, "panel": "v1 / train"},
        {"release": "v1", "split": "validation", "source": "b", "rows": 1, "share": 1.0, "panel": "v1 / validation"},
    ]


def test_dedup_cluster_size_counts_the_kept_row():
    clusters = {
        "s": pd.DataFrame({"id": ["r1", "r2", "r3"], "duplicate_of": ["k1", "k1", "k2"], "jaccard": 0.9}),
        "t": pd.DataFrame(
            {
                "id": pd.Series([], dtype=str),
                "duplicate_of": pd.Series([], dtype=str),
                "jaccard": pd.Series([], dtype=float),
            }
        ),
    }
    table = dedup_cluster_sizes(clusters)
    assert table[["source", "cluster_size", "clusters"]].values.tolist() == [["s", 2, 1], ["s", 3, 1]]


# --- the stage's command on real files -----------------------------------------------------------


def make_inputs(root: Path) -> dict:
    """Two releases of real GPT-4 prompts (metadata.jsonl), a clean report from the real cleaning rules
    on the real OpenPrompts sample, and a clusters table; returns the params written to params.yaml."""
    from scripts.lib.cleaning import clean_table, load_rules, report
    from scripts.lib.params import load_params

    prompts = [
        p.strip().lstrip("- ")
        for p in (FIXTURES / "gpt4-prompts-3k.txt").read_text(encoding="utf-8").splitlines()
        if p.strip()
    ][:300]
    for release, count in (("r1", 200), ("r2", 300)):
        for split, part in (("train", prompts[: count - 20]), ("validation", prompts[count - 20 : count])):
            folder = root / "data" / "releases" / release / split
            folder.mkdir(parents=True)
            lines = [
                json.dumps(
                    {
                        "file_name": f"images/{i}.jpg",
                        "text": t,
                        "orig_text": t,
                        "source": "gpt4" if i % 3 else "openprompts",
                        "id": f"{split}{i}",
                    }
                )
                for i, t in enumerate(part)
            ]
            (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    raw = pd.read_csv(FIXTURES / "openprompts-1k.csv")
    _, dropped = clean_table(raw.head(400), load_rules(load_params("clean", REPO / "params.yaml")))
    (root / "data" / "clean").mkdir(parents=True)
    for source in ("gpt4", "openprompts"):
        (root / "data" / "clean" / f"{source}.report.json").write_text(
            json.dumps(report(source, 400, Counter(dropped["reason"]), True)), encoding="utf-8"
        )
        write_parquet(
            pd.DataFrame({"id": ["a", "b", "c"], "duplicate_of": ["k", "k", "m"], "jaccard": [0.9, 0.8, 1.0]}),
            root / "data" / "dedup" / f"{source}.clusters.parquet",
        )
    params = {
        "sources": {"gpt4": {"kind": "text", "path": "x"}, "openprompts": {"kind": "openprompts", "path": "y"}},
        "releases": {"r1": {"components": [{"source": "gpt4"}]}, "r2": {"components": [{"source": "gpt4"}]}},
        "preview": {"length_bin": 32},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    return {"dropped": dropped}


@pytest.fixture
def run_plots(monkeypatch, capfd):
    """`python -m scripts plots ...` in a folder (`helpers.cli`: scripts.cli.main in this process)."""
    return lambda root: cli(
        ["plots", "data/releases", "data/clean", "data/dedup", "data/plots"], root, monkeypatch, capfd
    )


def test_plots_command_writes_every_declared_file_with_its_fields(tmp_path, run_plots):
    made = make_inputs(tmp_path)
    result = run_plots(tmp_path)
    assert result.returncode == 0, result.stderr
    declared = declared_plots()
    for name, columns in PLOT_FILES.items():
        rows = read_csv(tmp_path / "data" / "plots" / name)
        assert rows and list(rows[0]) == columns
        props = declared[f"data/plots/{name}"]
        assert {props["x"], props["y"]} <= set(columns)
    lengths = read_csv(tmp_path / "data" / "plots" / "prompt_lengths.csv")
    totals = {}
    for row in lengths:
        totals[(row["release"], row["split"])] = totals.get((row["release"], row["split"]), 0) + int(row["rows"])
    assert totals == {("r1", "train"): 180, ("r1", "validation"): 20, ("r2", "train"): 280, ("r2", "validation"): 20}
    assert all(int(row["chars"]) % 32 == 0 for row in lengths)
    mix = read_csv(tmp_path / "data" / "plots" / "source_mix.csv")
    assert {(r["release"], r["split"]) for r in mix} == set(totals)
    removed = read_csv(tmp_path / "data" / "plots" / "clean_removed.csv")
    by_rule = made["dropped"]["reason"].value_counts().to_dict()
    assert {r["rule"]: int(r["rows"]) for r in removed if r["source"] == "gpt4"} == by_rule
    clusters = read_csv(tmp_path / "data" / "plots" / "dedup_clusters.csv")
    assert [(r["source"], r["cluster_size"], r["clusters"]) for r in clusters] == [
        ("gpt4", "2", "1"),
        ("gpt4", "3", "1"),
        ("openprompts", "2", "1"),
        ("openprompts", "3", "1"),
    ]
    first = {name: (tmp_path / "data" / "plots" / name).read_bytes() for name in PLOT_FILES}
    assert run_plots(tmp_path).returncode == 0
    assert first == {name: (tmp_path / "data" / "plots" / name).read_bytes() for name in PLOT_FILES}


def test_plots_command_names_a_missing_input(tmp_path, run_plots):
    make_inputs(tmp_path)
    (tmp_path / "data" / "releases" / "r2" / "validation" / "metadata.jsonl").unlink()
    result = run_plots(tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "data/releases/r2/validation/metadata.jsonl: not found" in result.stderr
    assert not (tmp_path / "data" / "plots" / "prompt_lengths.csv").exists()


# --- the real pipeline ---------------------------------------------------------------------------


def test_built_repo_has_plot_data_for_every_release_and_a_contact_sheet(built_repo, tmp_path):
    params = yaml.safe_load((built_repo / "params.yaml").read_text(encoding="utf-8"))
    for name, props in declared_plots().items():
        rows = read_csv(built_repo / name)
        assert rows, name
        assert {props["x"], props["y"]} <= set(rows[0]), name
        if "release" in rows[0]:
            assert {r["release"] for r in rows} == set(RELEASES)
            assert {(r["release"], r["split"]) for r in rows} == {
                (v, s) for v in RELEASES for s in ("train", "validation")
            }
        elif "source" in rows[0]:
            assert {r["source"] for r in rows} <= set(params["sources"])
        else:  # benchmarks/results/generate_speed.csv: measured runs, one panel per setting
            assert all(float(r["images_per_s"]) > 0 for r in rows), name
    preview = params["preview"]
    for release in RELEASES:
        with Image.open(built_repo / "data" / "releases" / release / "preview.jpg") as sheet:
            assert sheet.format == "JPEG"
            assert sheet.size == (
                preview["columns"] * preview["thumb"],
                preview["rows"] * (preview["thumb"] + preview["caption_height"]),
            )
    # -o: the image plots' files go there, not into the (read-only) built repo's dvc_plots/
    shown = json.loads(run(["dvc", "plots", "show", "--json", "-o", str(tmp_path / "shown")], built_repo).stdout)
    assert not shown.get("errors"), shown.get("errors")
    sheets = {f"data/releases/{release}/preview.jpg" for release in RELEASES}  # release@V's image plots
    assert set(shown["data"]) == set(declared_plots()) | sheets  # every declared plot renders (dvc read its x/y fields)
    for name, (plot,) in shown["data"].items():
        if name in sheets:
            assert plot["type"] == "image" and Path(plot["url"]).is_file(), name
        else:
            assert plot["type"] == "vega" and plot["content"]["data"]["values"], name


def test_diff_report_points_to_the_pictures():
    from scripts.tools.diff import to_markdown

    report = {"rev_a": "v4-a", "rev_b": "v4-b", "release_a": "v4-b", "release_b": "v4-b", "leaks_b": 0, "splits": {}}
    text = to_markdown(report)
    assert "`data/releases/v4-b/preview.jpg`" in text and "`dvc plots diff v4-a v4-b`" in text
    assert "`data/dedup/<source>.preview.html`" in text


# --- rows.parquet: any export layout, and old releases through metadata.jsonl -------------------------


def export_release(root: Path, name: str, rows: pd.DataFrame, export) -> Path:
    """A release folder as release@V writes it: both splits in the `export` layout, then rows.parquet."""
    from scripts.lib.export import export_options, write_rows_table, write_split

    fmt, options = export_options(export, "test")
    release = root / "data" / "releases" / name
    for split in ("train", "validation"):
        write_split(rows[rows["split"] == split], release / split, fmt, options)
    write_rows_table(rows, release)
    return release


def shard_rows(tmp_path: Path) -> pd.DataFrame:
    from test_release_exports import make_rows

    return make_rows(tmp_path).assign(split=["train"] * 6 + ["validation"] * 2)


def test_plots_read_rows_parquet_of_any_layout_and_metadata_of_old_releases(tmp_path):
    from scripts.plots import read_release_rows

    rows = shard_rows(tmp_path)
    export_release(tmp_path, "new", rows, {"format": "webdataset", "shard_size": 3})  # no metadata.jsonl at all
    old = export_release(tmp_path, "old", rows.iloc[:5], "imagefolder")
    (old / "rows.parquet").unlink()  # built before rows.parquet existed
    table = read_release_rows(tmp_path / "data" / "releases", ["new", "old"])
    new = table[table["release"] == "new"]
    assert new[["split", "source", "text"]].values.tolist() == rows[["split", "source", "text"]].values.tolist()
    assert table[table["release"] == "old"]["text"].tolist() == rows["text"].iloc[:5].tolist()


def test_diff_reads_rows_parquet_and_falls_back_to_metadata_for_old_tags(tmp_path):
    import fsspec
    from fsspec.implementations.dirfs import DirFileSystem

    from scripts.tools.diff import compare, read_snapshot

    (tmp_path / "images").mkdir()
    rows = shard_rows(tmp_path / "images")
    a_root, b_root, c_root = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    export_release(a_root, "v", rows, {"format": "webdataset", "shard_size": 3})
    changed = rows.drop(index=1).reset_index(drop=True)
    changed.loc[0, "text"] = "a different caption"
    other = tmp_path / "other.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(other)
    changed.loc[2, "image"] = str(other)  # the image of row id changed.loc[2] is replaced
    export_release(b_root, "v", changed, {"format": "webdataset", "shard_size": 3})
    old = export_release(c_root, "v", rows, "imagefolder")
    (old / "rows.parquet").unlink()

    def snapshot(root: Path, rev: str):
        return read_snapshot(DirFileSystem(str(root), fsspec.filesystem("file")), rev, "v")

    a, b, c = snapshot(a_root, "A"), snapshot(b_root, "B"), snapshot(c_root, "C")
    assert set(c.rows["id"]) == set(rows["id"]) and set(c.rows.columns) == set(a.rows.columns)
    report = compare(a, b, {})
    train = report["splits"]["train"]
    assert (train["rows_a"], train["rows_b"], train["removed"], train["text_changed"]) == (6, 5, 1, 1)
    assert train["removed_ids"] == [rows.loc[1, "id"]]
    assert train["image_changed"] == 1 and report["splits"]["validation"]["image_changed"] == 0
    across = compare(c, b, {})  # an old ImageFolder tag against a new shard layout: rows still match by id
    assert across["splits"]["train"]["removed_ids"] == [rows.loc[1, "id"]]
    assert across["splits"]["train"]["text_changed"] == 1
