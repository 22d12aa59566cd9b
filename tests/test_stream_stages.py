"""prefilter@S, captions@S and split@S stream `runtime.stream_rows` rows at a time; captions sorts by id on
disk (scripts/lib/external_sort.py). On the real GPT-4 prompts, any chunk and bucket size writes the bytes
of one chunk, the rows are what the whole-table definitions give (id order, the team's shuffle), and a
failure part-way leaves no output and no spill."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from helpers.commands import cli
from helpers.tiers import fast_first
from helpers.workspace import naming_its_sources, run_scripts
from scripts.lib import external_sort
from scripts.lib.io import stable_id
from scripts.lib.tables import write_parquet
from scripts.split import shuffled_validation

REPO = Path(__file__).resolve().parents[1]
SOURCE = "s"
FOREIGN = (
    "Ein wunderschönes Gemälde eines alten Hauses im Wald bei Sonnenuntergang, mit warmen Farben gemalt",
    "Une peinture magnifique d'une vieille maison dans la forêt au coucher du soleil, aux couleurs chaudes",
    "Una pintura hermosa de una casa antigua en el bosque al atardecer, con colores cálidos y suaves",
)


def workspace(root: Path, fixtures: Path, language: str | None) -> Path:
    """params.yaml (the repository's, one text-only source) and data/dedup/s.parquet: the GPT-4 prompts
    as dedup@S leaves them, every fifth row with a predefined split."""
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["sources"] = {
        SOURCE: {"kind": "text", "path": "raw", "images": "raw", "text_only": True, "caption_language": language}
    }
    params["releases"] = {}
    params = naming_its_sources(params)
    root.mkdir(parents=True)
    (root / "raw").mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    prompts = (fixtures / "gpt4-prompts-3k.txt").read_text(encoding="utf-8").splitlines()
    for i in range(3, len(prompts), 97):  # a few that langdetect reads as another language
        prompts[i] = FOREIGN[i % len(FOREIGN)] + f" ({i})"
    n = len(prompts)
    rows = pd.DataFrame(
        {
            "id": [stable_id(SOURCE, i) for i in range(n)],
            "source": SOURCE,
            "prompt": prompts,
            "split": [("train" if i % 10 else "validation") if i % 5 == 0 else None for i in range(n)],
            "image": None,
            "width": pd.array([512 if i < 40 else None for i in range(n)], dtype="Int64"),
            "height": pd.array([None] * n, dtype="Int64"),
            "meta": None,
            "text": [p.strip().lower() for p in prompts],
        }
    )
    write_parquet(rows, root / "data" / "dedup" / f"{SOURCE}.parquet")
    (root / "data" / "recipes" / "prefilter").mkdir(parents=True)
    return root


def set_params(root: Path, stream_rows: int, method: str = "shuffle") -> None:
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    params["runtime"]["stream_rows"] = stream_rows
    params["split"]["method"] = method
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def run_stages(root: Path, out: str, monkeypatch, capfd) -> dict[str, bytes]:
    """prefilter -> captions -> split into data/<out>/; every file's bytes."""
    folder = f"data/{out}"
    for argv in (
        ["prefilter", SOURCE, f"data/dedup/{SOURCE}.parquet", f"{folder}/prefilter.parquet"],
        ["captions", SOURCE, f"{folder}/prefilter.parquet", "raw", f"{folder}/captions.parquet"],
        ["split", SOURCE, f"{folder}/captions.parquet", f"{folder}/splits", "--order", f"{folder}/prefilter.parquet"],
    ):
        result = cli(argv, root, monkeypatch, capfd)
        assert result.returncode == 0, result.stderr
    return {p.relative_to(root / folder).as_posix(): p.read_bytes() for p in (root / folder).rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def english(tmp_path_factory, fixtures_dir) -> Path:
    return workspace(tmp_path_factory.mktemp("streams") / "ws", fixtures_dir, language="en")


@pytest.mark.parametrize("method", fast_first(["shuffle", "hash"]))
def test_any_chunk_and_bucket_size_writes_the_bytes_of_one_chunk(english, method, monkeypatch, capfd):
    set_params(english, 10_000_000, method)
    whole = run_stages(english, f"whole-{method}", monkeypatch, capfd)
    assert {"prefilter.parquet", "captions.parquet", "splits/train.parquet", "splits/validation.parquet"} <= set(whole)
    for stream_rows, bucket_rows in ((7, 1_000_000), (1_000, 250)):
        set_params(english, stream_rows, method)
        monkeypatch.setattr(external_sort, "BUCKET_ROWS", bucket_rows)
        assert run_stages(english, f"chunks-{method}-{stream_rows}", monkeypatch, capfd) == whole
    assert not list(english.rglob("*.tmp-*")), "a temp or spill file was left behind"


def test_the_streamed_rows_are_the_whole_table_definitions(english, monkeypatch, capfd):
    """captions: the input's English rows sorted by id; split: the team's shuffle of the rows without a
    predefined split, in generation order, predefined ones kept."""
    set_params(english, 300)
    monkeypatch.setattr(external_sort, "BUCKET_ROWS", 400)
    run_stages(english, "defs", monkeypatch, capfd)
    folder = english / "data" / "defs"
    prefiltered = pd.read_parquet(folder / "prefilter.parquet")
    captions = pd.read_parquet(folder / "captions.parquet")
    assert prefiltered["position"].tolist() == list(range(len(prefiltered)))
    assert captions["id"].tolist() == sorted(captions["id"])
    assert 0 < len(prefiltered) - len(captions) < len(prefiltered) // 10  # langdetect dropped a few
    assert set(captions["id"]) < set(prefiltered["id"])
    splits = pd.concat([pd.read_parquet(folder / "splits" / f"{s}.parquet") for s in ("train", "validation")])
    assert sorted(splits["id"]) == captions["id"].tolist()
    order = prefiltered.loc[prefiltered["id"].isin(captions["id"]) & prefiltered["split"].isna(), "id"].tolist()
    random.seed(42)
    random.shuffle(order)  # the team's split_dataset.py
    expected = dict.fromkeys(order[: int(len(order) * 0.95)], "train") | dict.fromkeys(
        order[int(len(order) * 0.95) :], "validation"
    )
    predefined = prefiltered.set_index("id")["split"].dropna().to_dict()
    assert splits.set_index("id")["split"].to_dict() == expected | {
        i: s for i, s in predefined.items() if i in set(captions["id"])
    }


@pytest.mark.parametrize("count", [0, 1, 2, 5, 20, 1_001])
@pytest.mark.parametrize("seed", [0, 42])
def test_shuffled_validation_is_random_shuffle_of_the_rows(count, seed):
    rows = [f"row-{i}" for i in range(count)]
    random.seed(seed)
    random.shuffle(rows)
    expected = {int(r.removeprefix("row-")) for r in rows[int(count * 0.95) :]}
    assert set(np.flatnonzero(shuffled_validation(count, 0.05, seed)).tolist()) == expected


def test_a_bad_row_part_way_leaves_no_output_and_no_spill(tmp_path, fixtures_dir, monkeypatch, capfd):
    """A source that is not text-only needs an image on every row: row 2,000 has none."""
    root = workspace(tmp_path / "ws", fixtures_dir, language=None)
    set_params(root, 500)
    monkeypatch.setattr(external_sort, "BUCKET_ROWS", 700)
    run_stages(root, "ok", monkeypatch, capfd)
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    params["sources"][SOURCE]["text_only"] = False
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    table = pq.read_table(root / "data/ok/prefilter.parquet").to_pandas()
    table["image"] = [None if i == 2_000 else f"raw/{i}.png" for i in range(len(table))]  # after 4 chunks spilled
    broken = root / "data/bad/prefilter.parquet"
    broken.parent.mkdir(parents=True)
    table.to_parquet(broken, index=False, row_group_size=500)
    result = cli(["captions", SOURCE, broken, "raw", "data/bad/captions.parquet"], root, monkeypatch, capfd)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"1 rows have no image reference (first id {table['id'][2_000]}" in result.stderr
    assert sorted(p.name for p in broken.parent.iterdir()) == ["prefilter.parquet"]


@pytest.mark.parametrize("stage", ["captions", "split"])
def test_a_full_disk_while_spilling_or_writing_is_one_line_and_leaves_nothing(english, stage, monkeypatch, capfd):
    set_params(english, 500)
    run_stages(english, "full", monkeypatch, capfd)
    folder = english / "data" / "full"
    out = folder / f"again-{stage}"
    out.mkdir()
    argv = (
        ["captions", SOURCE, folder / "prefilter.parquet", "raw", out / "captions.parquet"]
        if stage == "captions"
        else ["split", SOURCE, folder / "captions.parquet", out / "splits", "--order", folder / "prefilter.parquet"]
    )
    result = run_scripts(english, *map(str, argv), limit=64 * 1024)  # writes past 64 KiB fail, as on a full disk
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "too large" in result.stderr.lower(), result.stderr
    assert ".tmp-" not in result.stderr and str(out) in result.stderr, "the line names a temp path, not the output"
    assert not list(out.iterdir()), "a spill, temp or half-written file was left behind"


def test_off_a_terminal_each_streaming_stage_logs_its_progress_and_no_summary_before_it_ends(
    english, monkeypatch, capfd
):
    """#26: a stage that runs for minutes at scale is not silent in a CI log; the line that says it ended is
    the stage's own, printed after its outputs are committed (a failure after the loop stays one line)."""
    set_params(english, 1_000)
    monkeypatch.setenv("T2I_PROGRESS_EVERY_S", "0")
    folder = "data/progress"
    for stage, argv in (
        ("prefilter", ["prefilter", SOURCE, f"data/dedup/{SOURCE}.parquet", f"{folder}/prefilter.parquet"]),
        ("captions", ["captions", SOURCE, f"{folder}/prefilter.parquet", "raw", f"{folder}/captions.parquet"]),
        (
            "split",
            [
                "split",
                SOURCE,
                f"{folder}/captions.parquet",
                f"{folder}/splits",
                "--order",
                f"{folder}/prefilter.parquet",
            ],
        ),
    ):
        result = cli(argv, english, monkeypatch, capfd)
        assert result.returncode == 0, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.startswith(f"{stage}@{SOURCE}: ")]
        assert len(lines) >= 2 and all("/" in line and "%), " in line for line in lines), result.stderr
        assert not any(" rows in " in line for line in lines), "a summary before the outputs were committed"
