"""One line and exit 2, never a traceback, and paths derived from data kept in their root: each case a
real command (`python -m scripts ...` in this process: `helpers.cli`, the same
`scripts.cli.main`) in a workspace of its own (tmp_path/ws, its own params.yaml).

A refused case must exit 2 with ONE stderr line `error: ...` holding the listed substrings, no
traceback, never a forbidden string (a secret's content), and leave the workspace and its parent
byte for byte as they were. A handled case exits 0 (checked by its `then`). Record-level faults also
run under `on_error: skip`: exit 0, the bad record counted under its reason, the good ones kept.

At the end: 100k nested `[` in a reader, a full disk, a tar truncated while read (SIGBUS).
Proven elsewhere (not repeated here):
- output path is a folder / its parent is a file: tests/test_no_data_loss.py
- a chat reply nested 100k deep: tests/test_secrets.py
- params ranges, null, NaN, YAML alias bombs: tests/test_params_file.py
- tar slip, zip slip, links and devices in archives, a manifest shard path leaving its folder, a Kaggle
  image_path with `..`: tests/test_hostile_inputs.py
"""

from __future__ import annotations

import copy
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from helpers import GIT_ENV, cli, dvc_init, workspace, write_tar
from scripts.lib.io import stable_id
from scripts.lib.tables import write_parquet

REPO = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
S = "chatgpt"  # the source every case configures (a real name of params.yaml)
SECRET = "API_TOKEN=sk-live-Zq8u2-DO-NOT-PRINT"
INGEST = ["ingest", S, "data/prompts/out.parquet"]
RELEASE = ["release", "r1", "data/splits", "data/releases/r1"]


@dataclass
class Case:
    argv: list[str]
    error: list[str] | None = None  # substrings of the one error line; None: must succeed
    forbid: list[str] = field(default_factory=lambda: [SECRET, "sk-live"])  # never in stdout/stderr
    then: Callable[[Path], None] | None = None  # checks on success
    skip_reason: str | None = None  # a record-level fault: also run under on_error: skip, counted here


# ---------------------------------------------------------------- building inputs


def write_params(ws: Path, change: Callable[[dict], None] | None = None) -> None:
    params = copy.deepcopy(PARAMS)
    if change:
        change(params)
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True), encoding="utf-8")


def source(ws: Path, **entry) -> None:
    """params.yaml with sources.S set to `entry` (on_error: fail unless given)."""
    write_params(ws, lambda p: p["sources"].__setitem__(S, {"images": f"data/images/{S}", "on_error": "fail", **entry}))


def png(width: int = 8, height: int = 8) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 90)).save(buf, format="PNG")
    return buf.getvalue()


def secret_file(ws: Path) -> Path:
    (ws / "secret.env").write_text(SECRET + "\nOTHER=1\n", encoding="utf-8")
    return ws / "secret.env"


# ---------------------------------------------------------------- ingest: manifests, tars, parquet, zips


def case_manifest_buckets_is_a_number(ws):
    source(ws, kind="bucketed_webdataset", path="raw/lb")
    (ws / "raw/lb").mkdir(parents=True)
    (ws / "raw/lb/manifest.json").write_text(json.dumps({"format": "bucketed_shards_v1", "buckets": 5}))
    return Case(INGEST, ["raw/lb/manifest.json", "'buckets' is a int, expected a list"])


def case_manifest_shards_is_a_number(ws):
    source(ws, kind="bucketed_webdataset", path="raw/lb")
    (ws / "raw/lb").mkdir(parents=True)
    (ws / "raw/lb/manifest.json").write_text(json.dumps({"format": "bucketed_shards_v1", "buckets": [{"shards": 5}]}))
    return Case(INGEST, ["raw/lb/manifest.json", "buckets[0].shards is a int"])


def case_manifest_shard_is_a_symlink(ws):
    source(ws, kind="bucketed_webdataset", path="raw/lb")
    write_tar(ws / "elsewhere.tar", [("k.jpg", png()), ("k.txt", b"a caption\n"), ("k.json", b'{"w": 8, "h": 8}')])
    (ws / "raw/lb/buckets/p1").mkdir(parents=True)
    (ws / "raw/lb/buckets/p1/shard-000000.tar").symlink_to(ws / "elsewhere.tar")
    (ws / "raw/lb/manifest.json").write_text(
        json.dumps({"format": "bucketed_shards_v1", "buckets": [{"shards": ["buckets/p1/shard-000000.tar"]}]})
    )
    return Case(INGEST, ["shard-000000.tar", "is a symbolic link", "follow_symlinks"])


def _dalle3_with(ws: Path, record: dict) -> None:
    source(ws, kind="dalle3", path="raw/d3", images="raw/d3")
    good = {"short_caption": "a good caption", "width": 8, "height": 8}
    write_tar(
        ws / "raw/d3/data-000000.tar",
        [
            ("0000.png", png()),
            ("0000.json", json.dumps(good).encode()),
            ("0001.png", png()),
            ("0001.json", json.dumps(record).encode()),
        ],
    )


def case_dalle3_width_is_a_superscript_two(ws):
    _dalle3_with(ws, {"short_caption": "a red fox", "width": "²", "height": 8})
    return Case(
        INGEST, ["data-000000.tar", "sample '0001'", "width/height not integers: '²'x8"], skip_reason="bad_size"
    )


def case_dalle3_width_has_5000_digits(ws):
    _dalle3_with(ws, {"short_caption": "a red fox", "width": "9" * 5000, "height": 8})
    return Case(INGEST, ["data-000000.tar", "sample '0001'", "width/height not integers"], skip_reason="bad_size")


EXTS = ("png", "json")


def case_dalle3_tar_header_with_text_in_its_checksum_field(ws):
    """Found by tests/test_fuzz.py: a shard with bytes cut out puts JSON where a header's checksum is."""
    source(ws, kind="dalle3", path="raw/d3", images="raw/d3")
    record = json.dumps({"short_caption": "a good caption", "width": 8, "height": 8}).encode()
    shard = ws / "raw/d3/data-000000.tar"
    # sample 0001 ends with a note whose header is broken: the walk skips it and goes on (round 42a: it ended there,
    # and a broken image or json header now leaves its sample incomplete, a second count)
    exts = {1: ("png", "json", "txt")}
    members = [(f"000{i}.{ext}", png() if ext == "png" else record) for i in range(3) for ext in exts.get(i, EXTS)]
    write_tar(shard, members)
    data = bytearray(shard.read_bytes())
    header = data.index(b"0001.txt")  # the note's header starts with its name
    data[header + 148 : header + 156] = b'{"image_'
    shard.write_bytes(bytes(data))
    return Case(
        INGEST, ["data-000000.tar", "bad checksum field", "in a tar header at byte"], skip_reason="corrupt_archive"
    )


def _metadata(ws: Path, **columns) -> None:
    n = 2
    table = {
        "image_name": pa.array(["a.png", "b.png"]),
        "prompt": pa.array(["a red fox", "a grey owl"]),
        "part_id": pa.array([1, 1], pa.uint16()),
    }
    for name in (
        "seed",
        "step",
        "cfg",
        "sampler",
        "width",
        "height",
        "user_name",
        "timestamp",
        "image_nsfw",
        "prompt_nsfw",
    ):
        table[name] = pa.array([None] * n, pa.int32())
    table.update(columns)
    (ws / "raw/ddb").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(table), ws / "raw/ddb/metadata.parquet")


def case_diffusiondb_date32_decimal_columns_are_read(ws):
    import datetime as dt
    import decimal

    source(ws, kind="diffusiondb", path="raw/ddb", read="metadata")
    _metadata(
        ws,
        timestamp=pa.array([dt.date(2022, 8, 1), None], pa.date32()),
        cfg=pa.array([decimal.Decimal("7.5"), decimal.Decimal("12.25")], pa.decimal128(6, 2)),
    )

    def then(ws):
        rows = pd.read_parquet(ws / "data/prompts/out.parquet")
        meta = [json.loads(m) for m in rows["meta"]]
        assert [m["timestamp"] for m in meta] == ["2022-08-01", None] and [m["cfg"] for m in meta] == [7.5, 12.25]

    return Case(INGEST, None, then=then)


def case_diffusiondb_binary_prompt_column(ws):
    source(ws, kind="diffusiondb", path="raw/ddb", read="metadata")
    _metadata(ws, prompt=pa.array([b"a red fox", b"\xff\xfe"], pa.binary()))
    return Case(INGEST, ["raw/ddb/metadata.parquet", "column 'prompt' holds binary, expected string"])


def case_diffusiondb_binary_metadata_not_utf8(ws):
    source(ws, kind="diffusiondb", path="raw/ddb", read="metadata")
    _metadata(ws, user_name=pa.array([b"alice", b"\xff\xfe"], pa.binary()))
    return Case(
        INGEST, ["raw/ddb/metadata.parquet", "row 2", "native metadata is not valid UTF-8"], skip_reason="not_utf8"
    )


def case_diffusiondb_part_id_lists(ws):
    source(ws, kind="diffusiondb", path="raw/ddb", read="metadata", part_ids=[1])
    _metadata(ws, part_id=pa.array([[1], [1, 2]], pa.list_(pa.int64())))
    return Case(INGEST, ["raw/ddb/metadata.parquet", "column 'part_id' holds list<", "expected integer"])


def part_zip(listing_bytes: bytes | None = None, image: bytes | None = None, method: int = zipfile.ZIP_STORED) -> bytes:
    """part-000001.zip: a.png, b.png and the root listing part-000001.json."""
    listing = {
        "a.png": {"p": "a red fox", "se": 1, "c": 7.0, "st": 50, "sa": "k_lms"},
        "b.png": {"p": "a grey owl", "se": 2, "c": 7.0, "st": 50, "sa": "k_lms"},
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        zf.writestr("a.png", png())
        zf.writestr("b.png", image if image is not None else png(9, 9))
        zf.writestr("part-000001.json", listing_bytes if listing_bytes is not None else json.dumps(listing).encode())
    return buf.getvalue()


def patch_member(data: bytes, name: bytes, flag: int | None = None, method: int | None = None) -> bytes:
    """Set the general-purpose flag bits or the compression method of member `name`, in its local
    header and its central directory entry (what a zip tool would have written)."""
    data = bytearray(data)
    for signature, flag_at, length_at, name_at in ((b"PK\x03\x04", 6, 26, 30), (b"PK\x01\x02", 8, 28, 46)):
        at = data.find(signature)
        while at >= 0:
            length = struct.unpack_from("<H", data, at + length_at)[0]
            if bytes(data[at + name_at : at + name_at + length]) == name:
                if flag is not None:
                    struct.pack_into("<H", data, at + flag_at, struct.unpack_from("<H", data, at + flag_at)[0] | flag)
                if method is not None:
                    struct.pack_into("<H", data, at + flag_at + 2, method)
            at = data.find(signature, at + 4)
    return bytes(data)


def _parts(ws: Path, data: bytes, name: str = "part-000001.zip", **entry) -> None:
    source(ws, kind="diffusiondb", path="raw/ddb", read="parts", **entry)
    (ws / "raw/ddb").mkdir(parents=True, exist_ok=True)
    (ws / "raw/ddb" / name).write_bytes(data)


def case_diffusiondb_part_zip_named_like_a_browser_copy(ws):
    _parts(ws, part_zip())
    (ws / "raw/ddb/part-000001 (1).zip").write_bytes(part_zip())
    return Case(INGEST, ["raw/ddb/part-000001 (1).zip", "not a DiffusionDB part name (part-NNNNNN.zip)"])


def case_diffusiondb_zip_listing_with_a_bad_crc(ws):
    data = bytearray(part_zip())
    at = data.index(b'"a red fox"')
    data[at + 1 : at + 4] = b"RED"  # same length: only the CRC tells
    _parts(ws, bytes(data), part_ids=[1])
    return Case(INGEST, ["raw/ddb/part-000001.zip", "member part-000001.json: unreadable", "corrupt", "CRC"])


def case_diffusiondb_zip_image_with_a_bad_crc(ws):
    image = png(9, 9)
    data = bytearray(part_zip(image=image))
    at = data.index(image) + len(image) - 5  # inside IEND's CRC: the PNG header still parses
    data[at] ^= 0xFF
    _parts(ws, bytes(data), part_ids=[1])
    return Case(INGEST, ["raw/ddb/part-000001.zip", "entry 'b.png'", "corrupt", "CRC"], skip_reason="corrupt_archive")


def case_diffusiondb_zip_listing_encrypted(ws):
    _parts(ws, patch_member(part_zip(), b"part-000001.json", flag=0x1), part_ids=[1])
    return Case(INGEST, ["raw/ddb/part-000001.zip", "part-000001.json", "is encrypted"])


def case_diffusiondb_zip_image_encrypted(ws):
    _parts(ws, patch_member(part_zip(), b"b.png", flag=0x1), part_ids=[1])
    return Case(INGEST, ["raw/ddb/part-000001.zip", "entry 'b.png'", "is encrypted"], skip_reason="unreadable_member")


def case_diffusiondb_zip_listing_deflate64(ws):
    _parts(ws, patch_member(part_zip(), b"part-000001.json", method=9), part_ids=[1])
    return Case(INGEST, ["raw/ddb/part-000001.zip", "part-000001.json", "unsupported compression method (9)"])


def case_diffusiondb_zip_image_deflate64(ws):
    _parts(ws, patch_member(part_zip(), b"b.png", method=9), part_ids=[1])
    return Case(INGEST, ["entry 'b.png'", "unsupported compression method (9)"], skip_reason="unreadable_member")


def case_diffusiondb_zip_corrupt_deflate_stream(ws):
    data = bytearray(part_zip(method=zipfile.ZIP_DEFLATED))
    header = data.index(b"PK\x03\x04", data.index(b"b.png") + 5)  # the listing's local header, after b.png's
    start = header + 30 + len("part-000001.json")
    data[start : start + 8] = b"\xff" * 8
    _parts(ws, bytes(data), part_ids=[1])
    return Case(INGEST, ["raw/ddb/part-000001.zip", "part-000001.json", "corrupt"])


# ---------------------------------------------------------------- params naming paths: sources, csv_files, symlinks


def case_sources_null(ws):
    write_params(ws, lambda p: p.update(sources=None))
    return Case(INGEST, ["params.yaml: sources: null is not a mapping", "write `{}` for none"])


def case_source_named_dotdot_pwn(ws):
    write_params(ws, lambda p: p["sources"].__setitem__("../../pwn", {"kind": "text", "path": "raw/p"}))
    return Case(
        ["ingest", "../../pwn", "data/prompts/../../pwn.parquet"],
        ["params.yaml: sources: name '../../pwn' is not a plain name"],
    )


def case_release_named_dotdot(ws):
    write_params(ws, lambda p: p["releases"].__setitem__("../x", {"components": [{"source": S}]}))
    return Case(
        ["release", "../x", "data/splits", "data/releases/../x"],
        ["params.yaml: releases: name '../x' is not a plain name"],
    )


def case_synthesize_entry_named_dotdot(ws):
    write_params(ws, lambda p: p["synthesize"].__setitem__("../x", copy.deepcopy(p["synthesize"]["gpt4_style"])))
    return Case(
        ["synthesize", "../x", "data/synthesize/../x"], ["params.yaml: synthesize: name '../x' is not a plain name"]
    )


def _kaggle(ws: Path, csv_files: list[str]) -> None:
    source(ws, kind="kaggle_sd2", path="raw/k", images="raw/k", csv_files=csv_files)
    (ws / "raw/k").mkdir(parents=True)
    (ws / "raw/k/prompts.csv").write_text("prompt\na red fox\n", encoding="utf-8")
    (ws / "raw/k/0.png").write_bytes(png())


def case_csv_files_naming_a_secret_outside_the_source(ws):
    secret_file(ws)
    _kaggle(ws, ["prompts.csv", "../../secret.env"])
    return Case(INGEST, ["params.yaml: sources.chatgpt.csv_files", "'../../secret.env' leaves the source folder"])


def case_csv_files_naming_a_link_to_a_secret(ws):
    _kaggle(ws, ["prompts.csv", "keys.csv"])
    (ws / "raw/k/keys.csv").symlink_to(secret_file(ws))
    return Case(INGEST, ["raw/k/keys.csv", "is a symbolic link", "follow_symlinks"])


def case_csv_header_of_a_non_csv_is_never_printed(ws):
    """A file that is not the CSV expected (here a secrets file, named by mistake): its first line is
    the header, which a missing-column error must not print."""
    _kaggle(ws, ["keys.csv"])
    (ws / "raw/k/keys.csv").write_text(SECRET + "\n", encoding="utf-8")
    return Case(INGEST, ["raw/k/keys.csv", "missing column 'prompt' (the header has 1 fields)"])


def _text_with_link(ws: Path, **entry) -> None:
    source(ws, kind="text", path="raw/p", **entry)
    (ws / "raw/p").mkdir(parents=True)
    (ws / "raw/p/prompts.txt").write_text("a red fox in the snow\n", encoding="utf-8")
    (ws / "raw/p/keys.txt").symlink_to(secret_file(ws))


def case_text_source_with_a_link_to_a_secrets_file(ws):
    _text_with_link(ws)
    return Case(INGEST, ["raw/p/keys.txt", "is a symbolic link", "follow_symlinks: true"])


def case_text_source_link_followed_when_asked(ws):
    _text_with_link(ws, follow_symlinks=True)

    def then(ws):
        prompts = set(pd.read_parquet(ws / "data/prompts/out.parquet")["prompt"])
        assert "a red fox in the snow" in prompts and SECRET in prompts  # the user opted in

    return Case(INGEST, None, forbid=[], then=then)


def case_gustavosta_image_through_a_linked_folder(ws):
    source(ws, kind="gustavosta", path="raw/g", images="raw/g", format="kaggle_csv")
    (ws / "elsewhere").mkdir()
    (ws / "elsewhere/0.png").write_bytes(png())
    (ws / "raw/g").mkdir(parents=True)
    (ws / "raw/g/imgs").symlink_to(ws / "elsewhere")
    (ws / "raw/g/own").mkdir()
    (ws / "raw/g/own/1.png").write_bytes(png())
    (ws / "raw/g/train.csv").write_text(
        "Prompt,image_path\na red fox,imgs/0.png\na grey owl,own/1.png\n", encoding="utf-8"
    )
    return Case(INGEST, ["raw/g/train.csv", "row 1", "is a symbolic link"], skip_reason="unsafe_path")


# ---------------------------------------------------------------- captions: the generate manifest


def _captions(ws: Path, manifest: pd.DataFrame) -> Case:
    write_params(ws)
    ids = [stable_id(S, i) for i in range(3)]
    rows = pd.DataFrame(
        {
            "id": ids,
            "source": S,
            "prompt": ["a", "b", "c"],
            "text": ["a", "b", "c"],
            "split": pd.Series([None] * 3, dtype="string"),
            "image": pd.Series([None] * 3, dtype="string"),
            "width": pd.Series([None] * 3, dtype="Int64"),
            "height": pd.Series([None] * 3, dtype="Int64"),
            "meta": "{}",
        }
    )
    write_parquet(rows, ws / "data/dedup/in.parquet")
    write_parquet(manifest.assign(id=manifest["id"].map(lambda i: ids[i])), ws / f"data/images/{S}/manifest.parquet")
    return Case(["captions", S, "data/dedup/in.parquet", f"data/images/{S}", "data/captions/out.parquet"])


def case_captions_manifest_repeats_an_id(ws):
    case = _captions(
        ws, pd.DataFrame({"id": [0, 1, 2, 1], "file": ["0.jpg", "1.jpg", "2.jpg", "1b.jpg"], "width": 8, "height": 8})
    )
    case.error = [f"data/images/{S}/manifest.parquet", "duplicate id"]
    return case


def case_captions_manifest_without_a_file_column(ws):
    case = _captions(ws, pd.DataFrame({"id": [0, 1, 2], "width": 8, "height": 8}))
    case.error = [f"data/images/{S}/manifest.parquet", "no 'file' column"]
    return case


def case_captions_manifest_file_leaves_the_folder(ws):
    case = _captions(
        ws, pd.DataFrame({"id": [0, 1, 2], "file": ["0.jpg", "../../../secret.env", "2.jpg"], "width": 8, "height": 8})
    )
    case.error = ["manifest.parquet", "'../../../secret.env' leaves the images folder"]
    return case


# ---------------------------------------------------------------- release: trusting split rows


def split_rows(ws: Path, n: int = 6, image: bytes | None = None) -> pd.DataFrame:
    """n rows of source S with real images in data/images/S (the source's declared `images`)."""
    folder = ws / "data/images" / S
    folder.mkdir(parents=True, exist_ok=True)
    ids = [stable_id(S, i) for i in range(n)]
    for row_id in ids:
        (folder / f"{row_id}.png").write_bytes(image if image is not None else png(40, 30))
    texts = [f"a red fox number {i} in the snow" for i in range(n)]
    return pd.DataFrame(
        {
            "id": ids,
            "source": S,
            "split": None,
            "text": texts,
            "orig_text": texts,
            "image": [f"data/images/{S}/{i}.png" for i in ids],
            "width": pd.Series([40] * n, dtype="Int64"),
            "height": pd.Series([30] * n, dtype="Int64"),
        }
    )


def release_ws(
    ws: Path, rows: pd.DataFrame, export: str | None = None, change: Callable[[dict], None] | None = None
) -> Case:
    def params(p):
        p["releases"] = {
            "r1": {
                "components": [
                    {"source": S, "split": "train", "into": "train"},
                    {"source": S, "split": "validation", "into": "validation"},
                ],
                **({"export": export} if export else {}),
            }
        }
        if change:
            change(p)

    write_params(ws, params)
    half = len(rows) // 2
    write_parquet(rows.iloc[:half].assign(split="train"), ws / f"data/splits/{S}/train.parquet")
    write_parquet(rows.iloc[half:].assign(split="validation"), ws / f"data/splits/{S}/validation.parquet")
    return Case(RELEASE)


def _with(rows: pd.DataFrame, row: int, **values) -> pd.DataFrame:
    rows = rows.copy()
    for column, value in values.items():
        rows[column] = rows[column].astype(object)
        rows.at[row, column] = value
    return rows


def case_release_corrupt_png_in_a_bucketed_export(ws):
    rows = split_rows(ws)
    Path(rows["image"][1]).write_bytes(png(40, 30)[:60])  # header intact, pixels cut
    case = release_ws(ws, rows, export="bucketed")
    case.error = [f"{rows['image'][1]}: cannot read image"]
    return case


def case_release_corrupt_png_in_the_contact_sheet(ws):
    """ImageFolder places the image without decoding it; the contact sheet draws a grey box for it."""
    rows = split_rows(ws, image=png(40, 30)[:60])
    case = release_ws(ws, rows)
    case.then = lambda ws: (ws / "data/releases/r1/preview.jpg").is_file() or pytest.fail("no preview.jpg")
    return case


def case_release_split_without_orig_text(ws):
    case = release_ws(ws, split_rows(ws).drop(columns=["orig_text"]))
    case.error = [f"data/splits/{S}/train.parquet", "no 'orig_text' column"]
    return case


def case_release_null_text_in_a_webdataset_export(ws):
    case = release_ws(ws, _with(split_rows(ws), 4, text=None), export="webdataset")
    case.error = [f"data/splits/{S}/validation.parquet", "row 2", "null text"]
    return case


def case_release_source_missing_from_params(ws):
    case = release_ws(ws, split_rows(ws), change=lambda p: [p["sources"].pop(S), p["generate"]["sources"].remove(S)])
    case.error = ["params.yaml: releases.r1", f"names source '{S}'", "not under sources"]
    return case


def case_release_with_sources_null(ws):
    case = release_ws(ws, split_rows(ws), change=lambda p: p.update(sources=None))
    case.error = ["params.yaml: sources: null is not a mapping", "write `{}` for none"]
    return case


def case_release_id_climbing_out_of_the_release(ws):
    case = release_ws(ws, _with(split_rows(ws), 0, id="../../../../../x"))
    case.error = [f"data/splits/{S}/train.parquet", "row 1", "id '../../../../../x' is not a plain name"]
    return case


def case_release_image_etc_passwd(ws):
    case = release_ws(ws, _with(split_rows(ws), 0, image="/etc/passwd"))
    case.error = ["row 1", "image '/etc/passwd' is outside the folders of source 'chatgpt'"]
    return case


def case_release_image_climbing_out_of_the_store(ws):
    secret_file(ws)
    case = release_ws(ws, _with(split_rows(ws), 1, image=f"data/images/{S}/../../../secret.env"))
    case.error = ["row 2", "is outside the folders of source 'chatgpt'"]
    return case


def case_release_image_in_an_archive_outside_the_store(ws):
    write_tar(ws / "other.tar", [("0.png", png())])
    case = release_ws(ws, _with(split_rows(ws), 0, image=f"{ws}/other.tar!/0.png"))
    case.error = ["row 1", "other.tar!/0.png", "is outside the folders"]
    return case


def case_release_symlinked_image_in_the_store_pointing_out(ws):
    rows = split_rows(ws)
    link = Path(rows["image"][0])
    link.unlink()
    link.symlink_to(secret_file(ws))
    case = release_ws(ws, rows)
    case.error = ["row 1", str(link), "is outside the folders of source 'chatgpt'"]
    return case


def case_release_symlinked_image_inside_the_store_is_placed_as_a_file(ws):
    rows = split_rows(ws)
    link = Path(rows["image"][0])
    link.unlink()
    link.symlink_to(Path(rows["image"][1]).name)  # relative link to another image of the store
    case = release_ws(ws, rows)

    def then(ws):
        placed = [p for p in (ws / "data/releases/r1").rglob("*.png")]
        assert len(placed) == 6 and not [p for p in placed if p.is_symlink()], placed

    case.then = then
    return case


def case_release_row_of_another_source(ws):
    case = release_ws(ws, _with(split_rows(ws), 0, source="../../pwn"))
    case.error = ["row 1", "source '../../pwn' in the split folder of 'chatgpt'"]
    return case


# ---------------------------------------------------------------- diff and tag


def _git(ws: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=ws, check=True, capture_output=True, env={**os.environ, **GIT_ENV})


def _diff_repo(ws: Path) -> None:
    """A git + DVC repository whose commit holds release r1 (git-tracked, one image per split)."""
    write_params(ws, lambda p: p.update(releases={"r1": {"components": [{"source": S}]}}))
    for split in ("train", "validation"):
        folder = ws / "data/releases/r1" / split
        (folder / "images" / S).mkdir(parents=True)
        (folder / "images" / S / "x.png").write_bytes(png())
        record = {"file_name": f"images/{S}/x.png", "id": f"{split}01", "source": S, "text": "a red fox"}
        (folder / "metadata.jsonl").write_text(json.dumps(record) + "\n", encoding="utf-8")
    _git(ws, "init", "-q", "-b", "main")
    dvc_init(ws)
    _git(ws, "add", "-A")
    _git(ws, "commit", "-qm", "r1")


def case_diff_missing_image_at_one_revision(ws):
    _diff_repo(ws)
    (ws / f"data/releases/r1/validation/images/{S}/x.png").unlink()
    return Case(
        ["diff", "HEAD", "workspace", "--release", "r1"],
        ["workspace:data/releases/r1/validation/metadata.jsonl", f"image 'images/{S}/x.png'", "not found"],
    )


def case_diff_bad_yaml_at_one_revision(ws):
    _diff_repo(ws)
    (ws / "params.yaml").write_text("releases: {r1: [oops\n", encoding="utf-8")
    return Case(["diff", "HEAD", "workspace"], ["workspace:params.yaml: line", "not valid YAML"])


def case_a_newline_in_a_named_path_stays_on_the_line(ws):
    write_params(ws)
    return Case(["clean-text", "missing\ninput.txt", "out.jsonl"], ["missing\\ninput.txt", "not found"])


def case_a_newline_in_an_unknown_params_key(ws):
    (ws / "params.yaml").write_text('"sour\\nces": {}\nsources: {}\n', encoding="utf-8")
    return Case(INGEST, ["params.yaml: unknown key 'sour\\nces'"])


def case_tag_outside_a_git_repository(ws):
    write_params(ws)
    return Case(["tag", "v2"], ["not inside a git repository"])


# ---------------------------------------------------------------- the runner

CASES = {name[5:]: fn for name, fn in dict(globals()).items() if name.startswith("case_")}


def snapshot(root: Path) -> dict[str, bytes | str | None]:
    """Every path under root (links not followed) -> its bytes, link target, or None for a folder."""
    out = {}
    for path in sorted(root.rglob("*")):
        key = path.relative_to(root).as_posix()
        out[key] = f"-> {os.readlink(path)}" if path.is_symlink() else None if path.is_dir() else path.read_bytes()
    return out


def without_dvc_state(shot: dict) -> dict:
    """DVC's own state (site cache, temp) changes when DVCFileSystem only reads."""
    return {k: v for k, v in shot.items() if not k.startswith(("ws/.dvc/tmp", "ws/.dvc/cache", "ws/.git/"))}


def run_case(tmp_path: Path, name: str, monkeypatch, capfd, on_error: str = "fail"):
    ws = tmp_path / "ws"
    ws.mkdir()
    monkeypatch.chdir(ws)  # builders may use relative paths
    case = CASES[name](ws)
    if on_error == "skip":
        params = yaml.safe_load((ws / "params.yaml").read_text(encoding="utf-8"))
        params["sources"][S]["on_error"] = "skip"
        (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    before = without_dvc_state(snapshot(tmp_path))
    result = cli(case.argv, ws, monkeypatch, capfd)
    said = result.stdout + result.stderr
    assert "Traceback" not in said, result.stderr[-3000:]
    for secret in case.forbid:
        assert secret not in said, f"{secret!r} printed"
    return case, result, before, ws


@pytest.mark.parametrize("name", sorted(CASES))
def test_case(tmp_path, name, monkeypatch, capfd):
    case, result, before, ws = run_case(tmp_path, name, monkeypatch, capfd)
    if case.error is None:
        assert result.returncode == 0, result.stderr[-3000:]
        case.then(ws)
        return
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (
        result.returncode,
        result.stderr[-3000:],
    )
    for part in case.error:
        assert part in lines[0], f"{part!r} not in {lines[0]!r}"
    after = without_dvc_state(snapshot(tmp_path))
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"a refused command changed files: {changed[:10]}"


SKIPPED = [
    "dalle3_tar_header_with_text_in_its_checksum_field",
    "dalle3_width_is_a_superscript_two",
    "dalle3_width_has_5000_digits",
    "diffusiondb_binary_metadata_not_utf8",
    "diffusiondb_zip_image_with_a_bad_crc",
    "diffusiondb_zip_image_encrypted",
    "diffusiondb_zip_image_deflate64",
    "gustavosta_image_through_a_linked_folder",
]  # the cases with a skip_reason: one bad record among good ones


@pytest.mark.parametrize("name", SKIPPED)
def test_case_under_on_error_skip_is_counted(tmp_path, name, monkeypatch, capfd):
    case, result, _, ws = run_case(tmp_path, name, monkeypatch, capfd, on_error="skip")
    assert case.skip_reason is not None
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((ws / "data/prompts/out.report.json").read_text(encoding="utf-8"))
    assert report["skipped"] == {case.skip_reason: 1}, report
    assert report["rows_written"] >= 1


def test_the_tables_cover_the_issue(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with_reason = []
    for name in CASES:
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        if CASES[name](tmp_path / name).skip_reason:
            with_reason.append(name)
    assert sorted(with_reason) == sorted(SKIPPED) and len(CASES) >= 40


# ---------------------------------------------------------------- whatever else a command meets: one line


@pytest.mark.parametrize(
    "raised, line",
    [
        (
            OSError(5, "Input/output error", "data/prompts/x.parquet"),
            "error: data/prompts/x.parquet: Input/output error",
        ),
        (PermissionError(13, "Permission denied", "a", None, "b"), "error: a -> b: Permission denied"),
        (ConnectionResetError(104, "Connection reset by peer"), "error: Connection reset by peer"),
        (MemoryError(), "error: out of memory"),
    ],
)
def test_any_os_or_memory_error_is_one_line_exit_2(tmp_path, monkeypatch, capfd, raised, line):
    """An OSError no stage turned into a DataError (an input that vanished, EIO), or MemoryError."""
    import scripts.ingest

    def fail(*args, **kwargs):
        raise raised

    write_params(tmp_path)
    monkeypatch.setattr(scripts.ingest, "ingest", fail)
    result = cli(["ingest", S, "out.parquet"], tmp_path, monkeypatch, capfd)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith(line), result.stderr


# ---------------------------------------------------------------- deep nesting, a full disk, a file shrinking while read


@pytest.fixture
def params_ws(tmp_path, monkeypatch) -> Path:
    """A workspace with the repository's params.yaml, as the current folder."""
    workspace.write_params(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _nested(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth


def _source(root: Path, name: str, **changes) -> None:
    sources = {
        **workspace.PARAMS["sources"],
        name: {**workspace.PARAMS["sources"][name], "on_error": "fail", **changes},
    }
    workspace.write_params(root, sources=sources)


def _deep_dalle3(root: Path) -> None:
    write_tar(root / "in" / "data-000000.tar", [("0000.png", workspace.PNG), ("0000.json", _nested().encode())])
    _source(root, "dalle3", path="in")


def _deep_manifest(root: Path) -> None:
    (root / "in").mkdir()
    (root / "in" / "manifest.json").write_text(_nested(), encoding="utf-8")
    _source(root, "laion_buckets", path="in")


def _deep_csv(root: Path) -> None:
    (root / "in").mkdir()
    (root / "in" / "openprompts.csv").write_text(f'prompt,raw_data\na red fox,"{_nested(50_000)}"\n', encoding="utf-8")
    _source(root, "openprompts", path="in")


DEEP_JSON = {
    "dalle3_member": (_deep_dalle3, "dalle3", ["data-000000.tar", "json"]),
    "webdataset_manifest": (_deep_manifest, "laion_buckets", ["manifest.json"]),
    "openprompts_raw_data": (_deep_csv, "openprompts", ["openprompts.csv", "row"]),
}


@pytest.mark.parametrize("case", DEEP_JSON)
def test_deeply_nested_json_is_one_line(params_ws, monkeypatch, capfd, case):
    ws = params_ws
    setup, source, needles = DEEP_JSON[case]
    setup(ws)
    result = cli(["ingest", source, "out.parquet"], ws, monkeypatch, capfd)
    code, err = result.returncode, result.stderr
    line = workspace.error_line(err)
    assert code == 2 and all(n in line for n in needles), line
    assert not (ws / "out.parquet").exists() and workspace.leftovers(ws) == []


def _subprocess(argv: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, **kwargs)


def _patched_ingest(ws: Path, source: str, patch: str) -> subprocess.CompletedProcess:
    """`ingest SOURCE out.parquet` on a copy of the sample's raw SOURCE in ws/in, in a process that first
    runs `patch` (Python that swaps a function, to land a fault at one exact point)."""
    shutil.copytree(workspace.RAW / source, ws / "in")
    _source(ws, source, path="in")
    script = f"import sys\n{patch}from scripts.cli import main\nsys.exit(main(['ingest', {source!r}, 'out.parquet']))\n"
    return _subprocess([sys.executable, "-c", script], ws)


@pytest.mark.parametrize("writer", ["clean-text", "ingest"])
def test_a_full_disk_is_one_line_and_leaves_nothing(params_ws, writer):
    ws = params_ws
    lines = "".join(f"a red fox number {i} jumping over the lazy dog in the snow\n" for i in range(20_000))
    (ws / "in").mkdir()
    (ws / "in/prompts.txt").write_text(lines, encoding="utf-8")
    _source(ws, "chatgpt", path="in")
    argv = (
        ["clean-text", "in/prompts.txt", "out/x.jsonl"]
        if writer == "clean-text"
        else ["ingest", "chatgpt", "out/x.parquet"]
    )
    result = workspace.run_scripts(ws, *argv, limit=64 * 1024)  # writes past 64 KiB fail, as on a full disk
    line = workspace.error_line(result.stderr)
    assert result.returncode == 2 and line.startswith("error: out/x.") and "too large" in line.lower(), result.stderr
    assert not (ws / "out").exists()  # nothing in it, and the folder it made for its output gone too


def test_a_tar_truncated_while_read_is_one_line(params_ws):
    ws = params_ws
    """A memory-mapped tar cut short under the reader killed the process with SIGBUS (exit 135)."""
    patch = (
        "import os\n"
        "import scripts.lib.readers.dalle3 as reader\n"
        "walk = reader.iter_samples\n"
        "def cut(buf, *args, **kwargs):\n"
        "    os.truncate('in/data-000000.tar', 1024)  # another process rewrites the shard\n"
        "    yield from walk(buf, *args, **kwargs)\n"
        "reader.iter_samples = cut\n"
    )
    result = _patched_ingest(ws, "dalle3", patch)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "data-000000.tar" in workspace.error_line(result.stderr) and "shrank" in result.stderr
    assert not (ws / "out.parquet").exists() and workspace.leftovers(ws) == []


def test_an_interrupt_while_the_last_rows_are_written_prints_only_its_line(params_ws):
    """A signal landing while ParquetRows writes its last row group (the rows all read: CI's Ctrl-C test
    met it): the file was closed under a writer left open, whose finalizer then failed at exit
    ("Exception ignored ... write to closed file"), a traceback after the `interrupted` line."""
    ws = params_ws
    patch = (
        "import signal\n"
        "import scripts.lib.tables as tables\n"
        "flush = tables.ParquetRows.flush\n"
        "def flush_then_signal(self):  # the sample's rows fit one group: its one flush is the last\n"
        "    flush(self)\n"
        "    signal.raise_signal(signal.SIGINT)\n"
        "tables.ParquetRows.flush = flush_then_signal\n"
    )
    result = _patched_ingest(ws, "chatgpt", patch)
    assert result.returncode == 130, (result.returncode, result.stderr)
    assert workspace.error_line(result.stderr) == "interrupted (SIGINT)"
    assert not (ws / "out.parquet").exists() and workspace.leftovers(ws) == []
