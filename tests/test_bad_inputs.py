"""Bad and hostile input over the whole pipeline, through the real CLI.

Each case builds a small workspace (its own params.yaml and input files) in a temp dir, runs
`python -m scripts <stage> ...` there (in this process: `helpers.cli`, the same `scripts.cli.main`;
a few cases also as a real subprocess), and asserts one of two outcomes:
  - a clear error: exit code 2, stderr is ONE line `error: ...` naming the file (and row where there
    is one), no traceback, and no output file (nor a temp file) left behind;
  - a handled input: exit code 0 and the bad rows counted in the stage's report.
Either way nothing is written outside the workspace.

Reader-level hostile archives (tar slip, links, devices, pax tricks, zip slip, member caps, CSV and
text encodings) are in tests/test_hostile_inputs.py; this file covers params, the stages after
ingest, and whole-file faults at ingest (truncated/empty/garbage sources).
"""

from __future__ import annotations

import copy
import io
import json
import os
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
import yaml

from helpers import dvc_init
from helpers.tiers import fast_first
from scripts.lib.io import PROMPT_COLUMNS, stable_id
from scripts.lib.tables import write_parquet

REPO = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
SOURCE = "chatgpt"  # a real source name of params.yaml (kind: text), cleaned here (write_params)
CAPTION_COLUMNS = ["id", "source", "split", "text", "orig_text", "image", "width", "height", "meta", "generation"]
PROMPTS = [
    "a red fox jumping over a sleeping dog in a snowy forest at dawn",
    "portrait of an old fisherman with a pipe, oil painting, warm light",
    "a futuristic city skyline at night with flying cars and neon signs",
    "a bowl of ramen on a wooden table, steam rising, studio photograph",
    "an astronaut riding a horse across the surface of the moon, detailed",
    "a cozy library with tall shelves, a fireplace and a sleeping cat",
]


@dataclass
class Expect:
    """What a case runs and what it must produce."""

    argv: list[str]
    error: list[str] | None = None  # substrings of the one-line error; None = must succeed
    absent: list[str] = field(default_factory=list)  # outputs that must not exist afterwards
    then: Callable[[Path], None] | None = None  # checks on a successful run (counts in the report)


# ---------------------------------------------------------------- building inputs


def write_params(ws: Path, change: Callable[[dict], None] | None = None, text: str | bytes | None = None) -> None:
    if text is not None:
        data = text if isinstance(text, bytes) else text.encode("utf-8")
        (ws / "params.yaml").write_bytes(data)
        return
    params = copy.deepcopy(PARAMS)
    params["sources"][SOURCE]["clean"] = True  # the shipped file renders ChatGPT raw (v3 cleans in the release)
    if change:
        change(params)
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True), encoding="utf-8")


def prompt_table(texts: list[str] = PROMPTS, source: str = SOURCE) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [stable_id(source, i) for i in range(len(texts))],
            "source": source,
            "prompt": texts,
            "split": pd.Series([None] * len(texts), dtype="string"),
            "image": pd.Series([None] * len(texts), dtype="string"),
            "width": pd.Series([None] * len(texts), dtype="Int64"),
            "height": pd.Series([None] * len(texts), dtype="Int64"),
            "meta": "{}",
        }
    )[PROMPT_COLUMNS]


def clean_table(texts: list[str] = PROMPTS) -> pd.DataFrame:
    return prompt_table(texts).assign(text=texts)


def jpeg(width: int = 16, height: int = 16) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (120, 30, 200)).save(buf, format="JPEG")
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height and has no pixels: a decompression bomb to a decoder."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


def caption_table(ws: Path, texts: list[str] = PROMPTS, images: bool = True) -> pd.DataFrame:
    folder = ws / "data" / "images" / SOURCE
    folder.mkdir(parents=True, exist_ok=True)
    rows = clean_table(texts).rename(columns={"prompt": "orig_text"})
    paths = []
    for row_id in rows["id"]:
        path = folder / f"{row_id}.jpg"
        if images:
            path.write_bytes(jpeg())
        paths.append(f"data/images/{SOURCE}/{row_id}.jpg")
    rows["image"] = pd.Series(paths, dtype="string")
    rows["width"] = pd.Series([16] * len(rows), dtype="Int64")
    rows["height"] = pd.Series([16] * len(rows), dtype="Int64")
    rows["generation"] = "{}"
    return rows[CAPTION_COLUMNS]


def write_splits(ws: Path, table: pd.DataFrame) -> None:
    half = len(table) // 2
    write_parquet(table.iloc[:half].assign(split="train"), ws / "data" / "splits" / SOURCE / "train.parquet")
    write_parquet(table.iloc[half:].assign(split="validation"), ws / "data" / "splits" / SOURCE / "validation.parquet")


def one_release(params: dict, **recipe) -> None:
    params["releases"] = {
        "r1": {
            "components": [
                {"source": SOURCE, "split": "train", "into": "train"},
                {"source": SOURCE, "split": "validation", "into": "validation"},
            ],
            **recipe,
        }
    }


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def parquet_bytes(df: pd.DataFrame, tmp: Path) -> bytes:
    write_parquet(df, tmp)
    data = tmp.read_bytes()
    tmp.unlink()
    return data


def text_source(params: dict, path: str = "raw/prompts") -> None:
    params["sources"][SOURCE] = {
        "kind": "text",
        "path": path,
        "images": f"data/images/{SOURCE}",
        "on_error": "fail",
        "clean": True,
    }


RELEASE_ARGV = ["release", "r1", "data/splits", "data/releases/r1"]
RELEASE_OUTS = ["data/releases/r1/train", "data/releases/r1/validation", "data/releases/r1/stats.json"]
CLEAN_ARGV = ["clean", SOURCE, "data/prompts/in.parquet", "data/clean/out.parquet"]
CLEAN_OUTS = ["data/clean/out.parquet", "data/clean/out.dropped.parquet", "data/clean/out.report.json"]
DEDUP_ARGV = ["dedup", SOURCE, "data/clean/in.parquet", "data/dedup/out.parquet"]
DEDUP_OUTS = ["data/dedup/out.parquet", "data/dedup/out.clusters.parquet", "data/dedup/out.report.json"]
SPLIT_ARGV = ["split", SOURCE, "data/captions/in.parquet", "data/splits/out"]
CAPTIONS_ARGV = ["captions", SOURCE, "data/dedup/in.parquet", f"data/images/{SOURCE}", "data/captions/out.parquet"]
GENERATE_ARGV = ["generate", SOURCE, "data/dedup/in.parquet", "data/images/out"]
INGEST_ARGV = ["ingest", SOURCE, "data/prompts/out.parquet"]
INGEST_OUTS = ["data/prompts/out.parquet", "data/prompts/out.report.json"]


def case_diff_unknown_revision(ws):
    # a real git + DVC repository with one commit; the diff names a tag that does not exist
    write_params(ws)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    home = dict(os.environ, HOME=str(ws / ".home"))
    subprocess.run([*git, "init", "-q"], cwd=ws, check=True, capture_output=True, env=home)
    dvc_init(ws)
    for argv in (git + ["add", "-A"], git + ["commit", "-qm", "init"]):
        subprocess.run(argv, cwd=ws, check=True, capture_output=True, env=home)
    # no tag v4-a: the workspace's data/releases/v4-a stands in (README), and what it lacks is one line
    return Expect(["diff", "v4-a", "HEAD"], ["v4-a", "not found"])


# ---------------------------------------------------------------- params (checked at stage start)


def case_params_unknown_key_names_the_nearest(ws):
    write_params(ws, lambda p: p["dedup"].update(treshold=0.8))
    write_parquet(clean_table(), ws / "data/clean/in.parquet")
    return Expect(DEDUP_ARGV, ["params.yaml: dedup: unknown key 'treshold'", "did you mean 'threshold'"], DEDUP_OUTS)


def case_params_unknown_section(ws):
    write_params(ws, lambda p: p.update(dedupe={"threshold": 0.8}))
    write_parquet(clean_table(), ws / "data/clean/in.parquet")
    return Expect(DEDUP_ARGV, ["params.yaml", "unknown key 'dedupe'", "did you mean 'dedup'"], DEDUP_OUTS)


def case_params_wrong_type_string_for_int(ws):
    write_params(ws, lambda p: p["split"].update(seed="42"))
    write_parquet(caption_table(ws), ws / "data/captions/in.parquet")
    return Expect(SPLIT_ARGV, ["params.yaml: split.seed", "integer", "'42'"], ["data/splits/out"])


def case_params_wrong_type_in_clean_rule(ws):
    write_params(ws, lambda p: p["clean"].update(max_chars="256"))
    write_parquet(prompt_table(), ws / "data/prompts/in.parquet")
    return Expect(CLEAN_ARGV, ["params.yaml: clean.max_chars", "'256'"], CLEAN_OUTS)


def case_params_unknown_key_in_a_list_entry(ws):
    def change(p):
        p["clean"]["normalise"] = [{"name": "x", "patern": "abc"}]

    write_params(ws, change)
    write_parquet(prompt_table(), ws / "data/prompts/in.parquet")
    return Expect(
        CLEAN_ARGV, ["params.yaml: clean.normalise[0]: unknown key 'patern'", "did you mean 'pattern'"], CLEAN_OUTS
    )


def case_params_bool_for_number(ws):
    write_params(ws, lambda p: p["generate"].update(steps=True))
    write_parquet(clean_table(), ws / "data/dedup/in.parquet")
    return Expect(GENERATE_ARGV, ["params.yaml: generate.steps"], ["data/images/out"])


def case_params_bad_enum_in_source(ws):
    write_params(ws, lambda p: p["sources"][SOURCE].update(on_error="ignore"))
    return Expect(INGEST_ARGV, ["params.yaml: sources.chatgpt.on_error", "'ignore'"], INGEST_OUTS)


def case_params_not_yaml(ws):
    write_params(ws, text="dedup:\n  threshold: [0.7\nsplit: {seed: 1}\n")
    write_parquet(clean_table(), ws / "data/clean/in.parquet")
    return Expect(DEDUP_ARGV, ["params.yaml", "line", "not valid YAML"], DEDUP_OUTS)


def case_params_not_utf8(ws):
    write_params(ws, text=b"split:\n  seed: 1\n  validation_fraction: 0.05 # \xff\xfe\n")
    write_parquet(caption_table(ws), ws / "data/captions/in.parquet")
    return Expect(SPLIT_ARGV, ["params.yaml", "not UTF-8"], ["data/splits/out"])


def case_params_top_level_not_a_mapping(ws):
    write_params(ws, text="- dedup\n- split\n")
    write_parquet(clean_table(), ws / "data/clean/in.parquet")
    return Expect(DEDUP_ARGV, ["params.yaml", "mapping"], DEDUP_OUTS)


# ---------------------------------------------------------------- release recipes


def case_release_recipe_base_cycle(ws):
    def change(p):
        one_release(p, base="r2")
        p["releases"]["r2"] = {"base": "r1", "components": [{"source": SOURCE, "split": "all", "into": "train"}]}

    write_params(ws, change)
    write_splits(ws, caption_table(ws))
    return Expect(RELEASE_ARGV, ["params.yaml: releases", "base cycle"], RELEASE_OUTS)


def case_release_recipe_unknown_base(ws):
    write_params(ws, lambda p: one_release(p, base="v9"))
    write_splits(ws, caption_table(ws))
    return Expect(RELEASE_ARGV, ["params.yaml: releases", "'v9'"], RELEASE_OUTS)


def case_release_recipe_bad_split_value(ws):
    def change(p):
        one_release(p)
        p["releases"]["r1"]["components"][0]["into"] = "tran"

    write_params(ws, change)
    write_splits(ws, caption_table(ws))
    return Expect(RELEASE_ARGV, ["params.yaml: releases.r1.components[0].into", "'tran'"], RELEASE_OUTS)


def case_release_recipe_unknown_source(ws):
    def change(p):
        one_release(p)
        p["releases"]["r1"]["components"].append({"source": "nosuchsource", "split": "train", "into": "train"})

    write_params(ws, change)
    write_splits(ws, caption_table(ws))
    return Expect(RELEASE_ARGV, ["nosuchsource"], RELEASE_OUTS)


# ---------------------------------------------------------------- missing upstream files


def case_missing_input_clean(ws):
    write_params(ws)
    return Expect(CLEAN_ARGV, ["data/prompts/in.parquet", "not found"], CLEAN_OUTS)


def case_missing_input_dedup(ws):
    write_params(ws)
    return Expect(DEDUP_ARGV, ["data/clean/in.parquet", "not found"], DEDUP_OUTS)


def case_missing_input_generate(ws):
    write_params(ws, lambda p: p["generate"].update(model="model", device="cpu"))
    fake_model(ws)
    return Expect(GENERATE_ARGV, ["data/dedup/in.parquet", "not found"], ["data/images/out"])


def case_missing_input_captions(ws):
    write_params(ws)
    return Expect(CAPTIONS_ARGV, ["data/dedup/in.parquet", "not found"], ["data/captions/out.parquet"])


def case_missing_input_split(ws):
    write_params(ws)
    return Expect(SPLIT_ARGV, ["data/captions/in.parquet", "not found"], ["data/splits/out"])


def case_missing_input_release(ws):
    write_params(ws, lambda p: one_release(p))
    write_splits(ws, caption_table(ws))
    (ws / "data/splits" / SOURCE / "validation.parquet").unlink()
    return Expect(RELEASE_ARGV, [f"data/splits/{SOURCE}/validation.parquet", "not found"], RELEASE_OUTS)


def case_missing_image_for_release(ws):
    write_params(ws, lambda p: one_release(p))
    table = caption_table(ws)
    write_splits(ws, table)
    (ws / table["image"].iloc[-1]).unlink()
    return Expect(RELEASE_ARGV, [table["image"].iloc[-1], "not found"], RELEASE_OUTS)


# ---------------------------------------------------------------- corrupt and mistyped tables


def case_truncated_parquet_into_clean(ws):
    write_params(ws)
    data = parquet_bytes(prompt_table(), ws / "t.parquet")
    (ws / "data/prompts").mkdir(parents=True)
    (ws / "data/prompts/in.parquet").write_bytes(truncated(data))
    return Expect(CLEAN_ARGV, ["data/prompts/in.parquet", "not a readable parquet file"], CLEAN_OUTS)


def case_not_parquet_into_split(ws):
    write_params(ws)
    (ws / "data/captions").mkdir(parents=True)
    (ws / "data/captions/in.parquet").write_bytes(b"PAR1 this is not a parquet file at all PAR1")
    return Expect(SPLIT_ARGV, ["data/captions/in.parquet", "not a readable parquet file"], ["data/splits/out"])


def case_truncated_parquet_into_dedup(ws):
    write_params(ws)
    data = parquet_bytes(clean_table(), ws / "t.parquet")
    (ws / "data/clean").mkdir(parents=True)
    (ws / "data/clean/in.parquet").write_bytes(truncated(data))
    return Expect(DEDUP_ARGV, ["data/clean/in.parquet", "not a readable parquet file"], DEDUP_OUTS)


def case_wrong_column_type_text_is_int_dedup(ws):
    write_params(ws)
    write_parquet(clean_table().assign(text=range(len(PROMPTS))), ws / "data/clean/in.parquet")
    return Expect(DEDUP_ARGV, ["data/clean/in.parquet", "text"], DEDUP_OUTS)


def case_wrong_column_type_prompt_is_int_clean(ws):
    write_params(ws)
    write_parquet(prompt_table().assign(prompt=range(len(PROMPTS))), ws / "data/prompts/in.parquet")
    return Expect(CLEAN_ARGV, ["data/prompts/in.parquet", "prompt"], CLEAN_OUTS)


def case_missing_prompt_column_clean(ws):
    write_params(ws)
    write_parquet(prompt_table().drop(columns=["prompt"]), ws / "data/prompts/in.parquet")
    return Expect(CLEAN_ARGV, ["data/prompts/in.parquet", "'prompt'"], CLEAN_OUTS)


def case_null_text_dedup(ws):
    write_params(ws)
    texts = list(PROMPTS)
    table = clean_table(texts)
    table.loc[3, "text"] = None
    write_parquet(table, ws / "data/clean/in.parquet")
    return Expect(DEDUP_ARGV, ["data/clean/in.parquet", "row 3", "null"], DEDUP_OUTS)


def case_unknown_predefined_split(ws):
    write_params(ws)
    table = caption_table(ws)
    table["split"] = pd.Series([None, None, "eval", None, None, None], dtype="string")
    write_parquet(table, ws / "data/captions/in.parquet")
    return Expect(SPLIT_ARGV, ["data/captions/in.parquet", "unknown split 'eval'"], ["data/splits/out"])


def case_wrong_column_type_split_is_int(ws):
    write_params(ws)
    write_parquet(caption_table(ws).assign(split=1), ws / "data/captions/in.parquet")
    return Expect(SPLIT_ARGV, ["data/captions/in.parquet", "split"], ["data/splits/out"])


# ---------------------------------------------------------------- duplicate ids


def case_duplicate_ids_generate(ws):
    write_params(ws, lambda p: p["generate"].update(model="model", device="cpu"))
    fake_model(ws)
    table = clean_table()
    table.loc[4, "id"] = table.loc[1, "id"]
    write_parquet(table, ws / "data/dedup/in.parquet")
    return Expect(GENERATE_ARGV, ["data/dedup/in.parquet", "row 4", "duplicate id"], ["data/images/out"])


def case_duplicate_ids_dedup(ws):
    write_params(ws)
    table = clean_table()
    table.loc[4, "id"] = table.loc[1, "id"]
    write_parquet(table, ws / "data/clean/in.parquet")
    return Expect(DEDUP_ARGV, ["data/clean/in.parquet", "'id'", "repeated"], DEDUP_OUTS)


def case_duplicate_ids_captions(ws):
    write_params(ws)
    table = clean_table()
    table.loc[4, "id"] = table.loc[1, "id"]
    table["image"] = pd.Series([f"raw/{i}.jpg" for i in range(len(table))], dtype="string")
    write_parquet(table, ws / "data/dedup/in.parquet")
    return Expect(CAPTIONS_ARGV, ["data/dedup/in.parquet", "duplicate id"], ["data/captions/out.parquet"])


def case_duplicate_ids_split(ws):
    write_params(ws)
    table = caption_table(ws)
    table.loc[4, "id"] = table.loc[1, "id"]
    write_parquet(table, ws / "data/captions/in.parquet")
    return Expect(SPLIT_ARGV, ["data/captions/in.parquet", "duplicate id"], ["data/splits/out"])


# ---------------------------------------------------------------- hostile text


def case_one_megabyte_prompt_is_cleaned_or_dropped_and_counted(ws):
    """The team's final rules collapse the repeats ("a castle on a hill"); no rule may leave a caption
    longer than max_chars, and the row is counted either way."""
    write_params(ws)
    write_parquet(prompt_table(PROMPTS + ["a castle on a hill " * 55_000]), ws / "data/prompts/in.parquet")

    def then(ws):
        report = json.loads((ws / "data/clean/out.report.json").read_text())
        kept = pd.read_parquet(ws / "data/clean/out.parquet")
        dropped = pd.read_parquet(ws / "data/clean/out.dropped.parquet")
        huge = kept[kept["prompt"].str.len() > 1_000_000]
        assert len(huge) + len(dropped[dropped["prompt"].str.len() > 1_000_000]) == 1
        assert (huge["text"].str.len() <= 256).all()
        assert report_total(report) == len(PROMPTS) + 1

    return Expect(CLEAN_ARGV, None, then=then)


def case_nul_bytes_and_controls_in_prompts_clean(ws):
    write_params(ws)
    texts = PROMPTS + [
        "a red\x00 car on a bridge at sunset, photograph",
        "\x00\x00\x00",
        "tab\tand\x1b[31mescape codes in a prompt here",
    ]
    write_parquet(prompt_table(texts), ws / "data/prompts/in.parquet")

    def then(ws):
        kept = pd.read_parquet(ws / "data/clean/out.parquet")
        assert not kept["text"].str.contains("\x00").any(), "a NUL byte reached a caption"
        report = json.loads((ws / "data/clean/out.report.json").read_text())
        assert report_total(report) == len(texts)

    return Expect(CLEAN_ARGV, None, then=then)


def case_one_megabyte_text_dedup(ws):
    write_params(ws)
    big = " ".join(f"w{i}" for i in range(150_000))  # 1 MB of distinct words: 150k shingles in one row
    write_parquet(clean_table(PROMPTS + [big]), ws / "data/clean/in.parquet")

    def then(ws):
        report = json.loads((ws / "data/dedup/out.report.json").read_text())
        assert report["rows_in"] == len(PROMPTS) + 1

    return Expect(DEDUP_ARGV, None, then=then)


def case_empty_table_flows_through_clean(ws):
    write_params(ws)
    write_parquet(prompt_table([]), ws / "data/prompts/in.parquet")

    def then(ws):
        assert len(pd.read_parquet(ws / "data/clean/out.parquet")) == 0

    return Expect(CLEAN_ARGV, None, then=then)


def case_invalid_utf8_clean_text(ws):
    write_params(ws)
    (ws / "in.txt").write_bytes(b"a fine prompt about a red fox in the snow\nbad \xff\xfe bytes here\n")
    return Expect(["clean-text", "in.txt", "out.jsonl"], ["in.txt", "line 2", "UTF-8"], ["out.jsonl"])


def case_invalid_utf8_dedup_text(ws):
    write_params(ws)
    (ws / "in.txt").write_bytes(b"a fine prompt about a red fox in the snow\nbad \xff\xfe bytes here\n")
    return Expect(["dedup-text", "in.txt", "out.jsonl"], ["in.txt", "line 2", "UTF-8"], ["out.jsonl"])


# ---------------------------------------------------------------- whole-file faults at ingest


def case_empty_text_source(ws):
    write_params(ws, text_source)
    (ws / "raw/prompts").mkdir(parents=True)
    (ws / "raw/prompts/prompts.txt").write_bytes(b"")

    def then(ws):  # an empty file is a source with no rows: written and counted, not an error
        report = json.loads((ws / "data/prompts/out.report.json").read_text())
        assert report["rows_written"] == 0 and len(pd.read_parquet(ws / "data/prompts/out.parquet")) == 0

    return Expect(INGEST_ARGV, None, then=then)


def case_source_folder_without_files(ws):
    write_params(ws, text_source)
    (ws / "raw/prompts").mkdir(parents=True)
    return Expect(INGEST_ARGV, ["raw/prompts", "no text files"], INGEST_OUTS)


def case_truncated_diffusiondb_metadata(ws):
    def change(p):
        p["sources"][SOURCE] = {
            "kind": "diffusiondb",
            "path": "raw/ddb",
            "images": "data/images/x",
            "on_error": "fail",
            "read": "metadata",
        }

    write_params(ws, change)
    frame = pd.DataFrame({"image_name": ["a.png", "b.png"], "prompt": PROMPTS[:2], "part_id": [1, 1]})
    (ws / "raw/ddb").mkdir(parents=True)
    (ws / "raw/ddb/metadata.parquet").write_bytes(truncated(parquet_bytes(frame, ws / "t.parquet")))
    return Expect(INGEST_ARGV, ["metadata.parquet"], INGEST_OUTS)


def case_truncated_diffusiondb_part_zip(ws):
    def change(p):
        p["sources"][SOURCE] = {
            "kind": "diffusiondb",
            "path": "raw/ddb",
            "images": "data/images/x",
            "on_error": "fail",
            "read": "parts",
            "part_ids": [1],
        }

    write_params(ws, change)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(
            "part-000001.json", json.dumps({"a.png": {"p": PROMPTS[0], "se": 1, "c": 7.0, "st": 50, "sa": "k_lms"}})
        )
        zf.writestr("a.png", png_header_only(8, 8))
    (ws / "raw/ddb").mkdir(parents=True)
    (ws / "raw/ddb/part-000001.zip").write_bytes(truncated(buf.getvalue()))
    return Expect(INGEST_ARGV, ["part-000001.zip"], INGEST_OUTS)


def case_truncated_dalle3_tar(ws):
    def change(p):
        p["sources"][SOURCE] = {"kind": "dalle3", "path": "raw/d3", "images": "raw/d3", "on_error": "fail"}

    write_params(ws, change)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in [
            ("0001.png", png_header_only(8, 8)),
            (
                "0001.json",
                json.dumps({"image_name": "0001.png", "short_caption": "a caption", "width": 8, "height": 8}).encode(),
            ),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (ws / "raw/d3").mkdir(parents=True)
    (ws / "raw/d3/data-000000.tar").write_bytes(buf.getvalue()[:700])  # cut inside the first member
    return Expect(INGEST_ARGV, ["data-000000.tar"], INGEST_OUTS)


def case_image_that_fails_to_decode(ws):
    def change(p):
        p["sources"][SOURCE] = {"kind": "dalle3", "path": "raw/d3", "images": "raw/d3", "on_error": "fail"}

    write_params(ws, change)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in [
            ("0001.png", b"\x89PNG\r\n\x1a\n" + os.urandom(64)),
            (
                "0001.json",
                json.dumps({"image_name": "0001.png", "short_caption": "a caption", "width": 8, "height": 8}).encode(),
            ),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (ws / "raw/d3").mkdir(parents=True)
    (ws / "raw/d3/data-000000.tar").write_bytes(buf.getvalue())
    return Expect(INGEST_ARGV, ["data-000000.tar", "0001"], INGEST_OUTS)


def case_decompression_bomb_image_in_kaggle_set(ws):
    def change(p):
        p["sources"][SOURCE] = {
            "kind": "kaggle_sd2",
            "path": "raw/k",
            "images": "raw/k",
            "on_error": "fail",
            "csv_files": ["gpt_generated_prompts.csv"],
        }

    write_params(ws, change)
    (ws / "raw/k").mkdir(parents=True)
    (ws / "raw/k/gpt_generated_prompts.csv").write_text("prompt\n" + "\n".join(f'"{t}"' for t in PROMPTS[:3]) + "\n")
    for i in range(3):
        (ws / f"raw/k/{i}.png").write_bytes(png_header_only(8, 8) if i != 1 else png_header_only(70000, 70000))
    return Expect(INGEST_ARGV, ["1.png", "70000x70000"], INGEST_OUTS)


def case_zip_bomb_part(ws):
    def change(p):
        p["sources"][SOURCE] = {
            "kind": "diffusiondb",
            "path": "raw/ddb",
            "images": "data/images/x",
            "on_error": "fail",
            "read": "parts",
            "part_ids": [1],
            "max_member_bytes": 1 << 20,
        }

    write_params(ws, change)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("part-000001.json", b"{" + b" " * (64 << 20) + b"}")  # 64 MiB of spaces, 64 KiB zipped
    (ws / "raw/ddb").mkdir(parents=True)
    (ws / "raw/ddb/part-000001.zip").write_bytes(buf.getvalue())
    return Expect(INGEST_ARGV, ["part-000001.zip", "part-000001.json"], INGEST_OUTS)


# ---------------------------------------------------------------- the runner


def fake_model(ws: Path) -> None:
    """A folder that passes generate's model check; input errors must stop it before any load."""
    (ws / "model").mkdir(parents=True, exist_ok=True)
    (ws / "model" / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')


def report_total(report: dict) -> int:
    """Rows a clean report accounts for (its `total`/`rows_in`, cross-checked with kept + dropped)."""
    total = report.get("total", report.get("rows_in"))
    kept = report.get("kept")
    dropped = report.get("dropped")
    if isinstance(dropped, dict):
        dropped = sum(dropped.values())
    if kept is not None and dropped is not None:
        assert kept + dropped == total, report
    return total


CASES = {name[5:]: fn for name, fn in dict(globals()).items() if name.startswith("case_")}


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


STAGE_ENV = {
    "TMPDIR": ".tmp",
    "HOME": ".home",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "OMP_NUM_THREADS": "1",
}


def stage_env(ws: Path) -> dict[str, str]:
    """No credentials, temp files and HOME inside the workspace, no hub access."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OPENAI_", "HF_TOKEN"))}
    env.update(
        {k: str(ws / v) if v.startswith(".") else v for k, v in STAGE_ENV.items()},
        PYTHONPATH=str(REPO),
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def run_in_process(ws: Path, argv: list[str], monkeypatch, capfd):
    """`python -m scripts ARGV` in this process, with the environment a subprocess would get."""
    import tempfile

    from helpers import cli

    wanted = stage_env(ws)
    for key in set(os.environ) - set(wanted):  # the credentials stage_env leaves out
        monkeypatch.delenv(key)
    for key, value in wanted.items():
        if os.environ.get(key) != value:
            monkeypatch.setenv(key, value)
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    return cli(argv, ws, monkeypatch, capfd)


def run_subprocess(ws: Path, argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scripts", *argv], cwd=ws, env=stage_env(ws), capture_output=True, text=True, timeout=300
    )


def check_case(tmp_path: Path, name: str, run) -> None:
    ws = tmp_path / "ws"
    (ws / ".tmp").mkdir(parents=True)
    (ws / ".home").mkdir()
    expect = CASES[name](ws)
    for leftover in ws.glob("t.parquet"):
        leftover.unlink()
    before = files_under(ws)
    outside_before = files_under(tmp_path) - {f"ws/{f}" for f in before}

    result = run(ws, expect.argv)

    crash = (result.stderr or "").strip().splitlines()[-1:] or [""]
    assert "Traceback" not in result.stderr + result.stdout, f"traceback ending in: {crash[0]}"
    if expect.error is None:
        assert result.returncode == 0, result.stderr[-2000:]
        expect.then(ws)
    else:
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
        for part in expect.error:
            assert part in lines[0], f"{part!r} not in {lines[0]!r}"
        for path in expect.absent:
            assert not (ws / path).exists(), f"{path} was written by a failed run"
        new = files_under(ws) - before
        assert not new, f"a failed run left files behind: {sorted(new)[:5]}"
    after = files_under(ws)
    assert not [f for f in after if ".tmp-" in Path(f).name], "a temp file was left behind"
    assert files_under(tmp_path) - {f"ws/{f}" for f in after} == outside_before, (
        "something was written outside the workspace"
    )


def test_the_table_has_at_least_25_cases():
    assert len(CASES) >= 25


# the 1 MB prompt runs in CI in a real process (below); in process it joins the slow tier (CI's 10 minutes)
IN_SLOW_TIER = {"one_megabyte_text_dedup"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in IN_SLOW_TIER else n for n in sorted(CASES)]
)
def test_bad_input(tmp_path, name, monkeypatch, capfd):
    check_case(tmp_path, name, lambda ws, argv: run_in_process(ws, argv, monkeypatch, capfd))


# the real process path: interpreter start, __main__, exit status, stderr as the OS sees it
SUBPROCESS_CASES = [
    "params_unknown_key_names_the_nearest",
    "truncated_parquet_into_clean",
    "missing_input_release",
    "invalid_utf8_clean_text",
    "one_megabyte_text_dedup",
]


@pytest.mark.parametrize("name", fast_first(SUBPROCESS_CASES, keep=2))
def test_bad_input_in_a_real_process(tmp_path, name):
    check_case(tmp_path, name, run_subprocess)


def test_usage_error_is_one_line_exit_2_in_a_real_process(tmp_path):
    result = run_subprocess(tmp_path, ["dedup", "--no-such-option"])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--no-such-option" in lines[0], result.stderr


# ---------------------------------------------------------------- the params schema stays in step


def test_the_repository_params_fit_the_schema():
    from scripts.lib.params import check_params

    check_params(yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8")))


def test_load_params_checks_once_and_names_the_file(tmp_path):
    from scripts.lib.errors import DataError
    from scripts.lib.params import load_params

    path = tmp_path / "params.yaml"
    path.write_text("split: {seed: 1, validation_fraction: 0.05}\n")
    assert load_params("split", path) == {"seed": 1, "validation_fraction": 0.05}
    path.write_text("split: {seed: 1, validation_fractoin: 0.05}\n")
    with pytest.raises(
        DataError,
        match=r"params.yaml: split: unknown key 'validation_fractoin' \(did you mean 'validation_fraction'\?\)",
    ):
        load_params("split", path)
    path.write_text("split: {seed: 1.5}\n")
    with pytest.raises(DataError, match=r"params.yaml: split.seed: .*integer.*\(got 1.5\)"):
        load_params("split", path)
