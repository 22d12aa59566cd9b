"""Row keys are unique per source whatever folders its files sit in, and unchanged for the layouts the formats
define: a row's id is stable_id(source, key), so two files of one base name (kaggle_sd2 `csv_files` in two
folders, bucketed shards a manifest lists under two parents of one name) once gave rows the same id and the
source could not be ingested; two Kaggle CSVs in one folder tied row N of each to the same N.png at exit 0.
Real CSV, PNG and tar files through the real ingest (in process and as a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_ingest import jpg, png, run_ingest

from helpers import write_tar
from helpers.repos import REPO
from scripts.lib.errors import DataError
from scripts.lib.io import stable_id


# ---------------------------------------------------------------- kaggle_sd2: one CSV a folder, keys by path
def kaggle_folder(folder: Path, prompts: list[str], name: str = "gpt_generated_prompts.csv") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("prompt\n" + "".join(f"{p}\n" for p in prompts), encoding="utf-8")
    for number in range(len(prompts)):
        (folder / f"{number}.png").write_bytes(png(8 + len(prompts[number]), 8))


KAGGLE_LAYOUTS = {  # csv_files -> the folders holding one gpt_generated_prompts.csv each
    "two folders, one file name": (
        ["gpt2/gpt_generated_prompts.csv", "hard/gpt_generated_prompts.csv"],
        ["gpt2", "hard"],
    ),
    "three folders, nested": (
        ["a/x/gpt_generated_prompts.csv", "b/x/gpt_generated_prompts.csv", "x/gpt_generated_prompts.csv"],
        ["a/x", "b/x", "x"],
    ),
    "dotted names": (["./one/gpt_generated_prompts.csv", "two//gpt_generated_prompts.csv"], ["one", "two"]),
}


@pytest.mark.parametrize("case", KAGGLE_LAYOUTS)
def test_kaggle_csvs_of_one_name_in_other_folders_give_distinct_rows_each_with_its_own_image(tmp_path, case):
    csv_files, folders = KAGGLE_LAYOUTS[case]
    root = tmp_path / "k"
    for number, folder in enumerate(folders):
        kaggle_folder(root / folder, [f"prompt {number} first", f"prompt {number} the second one"])
    rows, report = run_ingest(tmp_path, kind="kaggle_sd2", path=str(root), csv_files=csv_files)
    assert report["rows_written"] == 2 * len(folders)
    assert len({row["id"] for row in rows}) == len(rows)
    for number, folder in enumerate(folders):
        mine = [row for row in rows if row["prompt"].startswith(f"prompt {number} ")]
        assert [row["image"] for row in mine] == [
            f"{(root / folder).as_posix()}/0.png",
            f"{(root / folder).as_posix()}/1.png",
        ]
        assert [row["width"] for row in mine] == [8 + len(row["prompt"]) for row in mine]


def test_a_kaggle_csv_at_the_source_root_keeps_the_ids_it_always_had(tmp_path):
    root = tmp_path / "k"
    kaggle_folder(root, ["first prompt here", "second prompt here"], "hardcoded_prompts.csv")
    rows, _ = run_ingest(tmp_path, "sd2hardcode", kind="kaggle_sd2", path=str(root))
    assert [row["id"] for row in rows] == [stable_id("sd2hardcode", f"hardcoded_prompts.csv:{n}") for n in (1, 2)]
    as_file, _ = run_ingest(tmp_path, "sd2hardcode", kind="kaggle_sd2", path=str(root / "hardcoded_prompts.csv"))
    assert [row["id"] for row in as_file] == [row["id"] for row in rows]


KAGGLE_REFUSED = {  # (csv files written into k/, csv_files) -> what the one line says
    "both Kaggle CSVs in one folder": (
        ["gpt_generated_prompts.csv", "hardcoded_prompts.csv"],
        None,
        "holds gpt_generated_prompts.csv and hardcoded_prompts.csv, whose rows would take the same",
    ),
    "two named CSVs in one subfolder": (
        ["sub/a.csv", "sub/b.csv"],
        ["sub/a.csv", "sub/b.csv"],
        "holds a.csv and b.csv",
    ),
    "a copy of the CSV beside it": (["prompts.csv", "prompts (1).csv"], None, "holds prompts (1).csv and prompts.csv"),
    "one file named twice": (["a.csv"], ["a.csv", "./a.csv"], "file a.csv is listed twice"),
}


@pytest.mark.parametrize("case", KAGGLE_REFUSED)
def test_kaggle_csvs_that_would_share_images_or_rows_are_refused_in_one_line(tmp_path, case):
    names, csv_files, said = KAGGLE_REFUSED[case]
    root = tmp_path / "k"
    for name in names:
        kaggle_folder((root / name).parent, ["a lighthouse at dusk", "a fox in the snow"], Path(name).name)
    with pytest.raises(DataError) as refused:
        run_ingest(tmp_path, kind="kaggle_sd2", path=str(root), csv_files=csv_files)
    assert said in str(refused.value) and "\n" not in str(refused.value)
    assert not (tmp_path / "prompts").exists() or not list((tmp_path / "prompts").iterdir())


def test_the_ingest_command_refuses_two_kaggle_csvs_in_one_folder_at_exit_2(tmp_path):
    ws = tmp_path / "ws"
    root = ws / "raw" / "k"
    kaggle_folder(root, ["a lighthouse at dusk"], "gpt_generated_prompts.csv")
    kaggle_folder(root, ["a fox in the snow"], "hardcoded_prompts.csv")
    (ws / "params.yaml").write_text(
        yaml.safe_dump({"sources": {"k": {"kind": "kaggle_sd2", "path": "raw/k", "images": "raw/k"}}}), encoding="utf-8"
    )
    done = subprocess.run(
        [sys.executable, "-m", "scripts", "ingest", "k", "data/prompts/k.parquet"],
        cwd=ws,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "holds gpt_generated_prompts.csv and hardcoded_prompts.csv" in lines[0], lines
    assert not (ws / "data").exists() or not any(p.is_file() for p in (ws / "data").rglob("*"))


# ---------------------------------------------------------------- bucketed_webdataset: keys by the shard's path
def shard(path: Path, keys: list[str]) -> None:
    members = []
    for key in keys:
        members += [
            (f"{key}.jpg", jpg(12, 8)),
            (f"{key}.txt", f"caption of {path.parent.name}/{path.name}/{key}\n".encode()),
            (f"{key}.json", json.dumps({"target_w": 608, "target_h": 416}).encode()),
        ]
    write_tar(path, members)


def export(root: Path, shards: list[str]) -> None:
    for name in dict.fromkeys(shards):
        shard(root / name, ["0001", "0002"])
    manifest = {"format": "bucketed_shards_v1", "buckets": {"b": {"shards": shards}}}
    (root / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


BUCKETED_LAYOUTS = {
    "one bucket id under two parents": ["a/p512/shard-000000.tar", "b/p512/shard-000000.tar"],
    "a shard at the root and one below": ["shard-000000.tar", "x/shard-000000.tar", "y/shard-000000.tar"],
    "deep copies of one layout": ["old/buckets/p1/shard-000000.tar", "new/buckets/p1/shard-000000.tar"],
}


@pytest.mark.parametrize("case", BUCKETED_LAYOUTS)
def test_bucketed_shards_of_one_name_under_other_folders_give_distinct_rows(tmp_path, case):
    root = tmp_path / "w"
    export(root, BUCKETED_LAYOUTS[case])
    rows, report = run_ingest(tmp_path, kind="bucketed_webdataset", path=str(root))
    assert report["rows_written"] == 2 * len(BUCKETED_LAYOUTS[case]) == len({row["id"] for row in rows})


def test_the_export_layout_keeps_the_ids_it_always_had(tmp_path):
    root = tmp_path / "w"
    export(root, ["buckets/p1216x832/shard-000000.tar", "buckets/p832x1216/shard-000000.tar"])
    rows, _ = run_ingest(tmp_path, "laion", kind="bucketed_webdataset", path=str(root))
    assert [row["id"] for row in rows] == [
        stable_id("laion", f"{bucket}/shard-000000.tar/{key}")
        for bucket in ("p1216x832", "p832x1216")
        for key in ("0001", "0002")
    ]


BUCKETED_REFUSED = {
    "one shard in two buckets": ["buckets/p1/shard-000000.tar", "buckets/p1/shard-000000.tar"],
    "one shard spelt two ways": ["buckets/p1/shard-000000.tar", "buckets/p1/./shard-000000.tar"],
    "the layout's name and its short form": ["buckets/p1/shard-000000.tar", "p1/shard-000000.tar"],
}


@pytest.mark.parametrize("case", BUCKETED_REFUSED)
def test_a_manifest_listing_one_shard_twice_is_refused_in_one_line(tmp_path, case):
    root = tmp_path / "w"
    export(root, BUCKETED_REFUSED[case])
    with pytest.raises(DataError) as refused:
        run_ingest(tmp_path, kind="bucketed_webdataset", path=str(root))
    said = str(refused.value)
    if case == "the layout's name and its short form":
        assert (
            "manifest.json: shards buckets/p1/shard-000000.tar and p1/shard-000000.tar would give their rows one key"
            in said
        )
    else:
        assert "manifest.json: shard buckets/p1/shard-000000.tar is listed twice" in said
