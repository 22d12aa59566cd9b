"""Round 10d: captions paired with the wrong image, and rows merged or left out, at exit 0 (every row failed
before its fix). One table per class, real files (tar and zip archives, CSVs, PNGs, text files) through the
real readers and commands:
1. a name held twice in an archive, one copy refused on its own (over the cap, a link): ingest read one
   copy, a release the last: now the sample is refused at ingest, and a release refuses the name;
2. kaggle_sd2: a blank or whitespace-only line took a row number, so every later caption got the next
   image; now rows are numbered as pandas.read_csv numbers them (the Kaggle sets' {row_index}.png);
3. text read as lines split at "\\n" only (an old-Mac "\\r" file was one prompt) or at every separator
   str.splitlines knows (a caption's U+2028 broke its metadata.jsonl record);
4. source files matched case-sensitively: PROMPTS.TXT beside prompts.txt was left out.
"""

from __future__ import annotations

import io
import json
import tarfile
import warnings
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from helpers.commands import cli
from helpers.repos import REPO
from scripts.ingest import ingest
from scripts.lib.archive import UnsafeArchive, make_ref, read_member
from scripts.lib.errors import DataError
from scripts.lib.readers import SourceConfig

CAP = 2000  # max_member_bytes: the 8x8 PNG fits, the 64x64 noise does not


def png(size: int, seed: int = 0) -> bytes:
    """A real PNG: a plain square (small) or noise (over CAP from 64x64 on)."""
    import random

    from PIL import Image

    image = Image.new("RGB", (size, size), (200, 30, 30))
    if size >= 64:
        rng = random.Random(seed)
        image.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(size * size)])
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def ingest_rows(tmp_path: Path, **config) -> tuple[list[dict], dict]:
    out = tmp_path / "prompts" / "s.parquet"
    report = ingest("s", SourceConfig(**config), out)
    return pq.read_table(out).to_pylist(), report


# ---------------------------------------------------------------- 1. a name held twice in an archive
def write_members(path: Path, members: list[tuple[str, bytes | str]]) -> None:
    """A real tar: (name, bytes) regular files, (name, "->target") symbolic links."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if isinstance(data, str):
                info.type, info.linkname = tarfile.SYMTYPE, data.removeprefix("->")
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def dalle3_json(caption: str, size: int = 8, pad: int = 0) -> bytes:
    return json.dumps({"short_caption": caption, "width": size, "height": size, "pad": "x" * pad}).encode()


def bucketed_json(size: int = 8, pad: int = 0) -> bytes:
    return json.dumps({"target_w": size, "target_h": size, "pad": "x" * pad}).encode()


SMALL, BIG = png(8), png(64, seed=1)
assert len(SMALL) < CAP < len(BIG)

TAR_REPEATS = {  # sample a's members (sample b follows, whole); the name that repeats
    "the image's big copy last (the reported repro)": (
        [("a.png", SMALL), ("a.json", "caption"), ("a.png", BIG)],
        "a.png",
    ),
    "the image's big copy first": ([("a.png", BIG), ("a.json", "caption"), ("a.png", SMALL)], "a.png"),
    "the json's big copy last": ([("a.png", SMALL), ("a.json", "caption"), ("a.json", "big caption")], "a.json"),
    "a link under the image's name": ([("a.png", SMALL), ("a.json", "caption"), ("a.png", "->b.png")], "a.png"),
}


def tar_source(root: Path, kind: str, sample_a: list) -> Path:
    """A dalle3 or bucketed_webdataset source of one shard: sample a as given, then a plain sample b."""
    members: list[tuple[str, bytes | str]] = []
    for name, data in [*sample_a, ("b.png", SMALL), ("b.json", "caption")]:
        key = name.split(".")[0]
        if data == "caption" or data == "big caption":
            pad = 3 * CAP if data == "big caption" else 0
            if kind == "dalle3":
                data = dalle3_json(f"the caption of {key}", pad=pad)
            else:
                members.append((f"{key}.txt", f"the caption of {key}\n".encode()))
                data = bucketed_json(pad=pad)
        members.append((name, data))
    if kind == "dalle3":
        shard = root / "data-000000.tar"
    else:
        shard = root / "buckets" / "p8" / "shard-000000.tar"
        (root / "buckets" / "p8").mkdir(parents=True)
        manifest = {"format": "bucketed_shards_v1", "buckets": {"p8": {"shards": ["buckets/p8/shard-000000.tar"]}}}
        (root / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    write_members(shard, members)
    return shard


@pytest.mark.parametrize("kind", ["dalle3", "bucketed_webdataset"])
@pytest.mark.parametrize("case", TAR_REPEATS)
def test_a_name_twice_in_a_tar_refuses_its_sample_at_ingest_and_its_name_at_release(tmp_path, monkeypatch, case, kind):
    """ingest skipped the oversized (or linked) copy before grouping, so the sample looked whole and was
    written; a release's index kept the last copy: the big image under the small one's caption, exit 0."""
    monkeypatch.chdir(tmp_path)
    sample_a, repeated = TAR_REPEATS[case]
    shard = tar_source(Path("data/raw/d3"), kind, sample_a)
    rows, report = ingest_rows(tmp_path, kind=kind, path="data/raw/d3", on_error="skip", max_member_bytes=CAP)
    assert [row["prompt"] for row in rows] == ["the caption of b"], report
    assert report["skipped"].get("duplicate_key") == 1, report
    with pytest.raises(UnsafeArchive, match="more than once") as refused:
        read_member(make_ref(shard, repeated))
    assert refused.value.reason == "duplicate_key"
    assert read_member(make_ref(shard, "b.png")) == SMALL  # the other samples still read


ZIP_REPEATS = {  # DiffusionDB part-000001.zip's members, in order; what ingest says of image a.png
    "an image twice, both within the cap": (
        [("a.png", SMALL), ("a.png", png(16)), ("b.png", SMALL), ("part-000001.json", "listing")],
        "duplicate_key",
    ),
    "an image twice, the last over the cap": (
        [("a.png", SMALL), ("a.png", BIG), ("b.png", SMALL), ("part-000001.json", "listing")],
        "duplicate_key",
    ),
    "an image twice, the first over the cap": (
        [("a.png", BIG), ("b.png", SMALL), ("a.png", SMALL), ("part-000001.json", "listing")],
        "duplicate_key",
    ),
    "the listing twice": (
        [
            ("a.png", SMALL),
            ("part-000001.json", "listing"),
            ("b.png", SMALL),
            ("part-000001.json", "other listing"),
        ],
        "holds member part-000001.json 2 times",
    ),
}


@pytest.mark.parametrize("case", ZIP_REPEATS)
def test_a_name_twice_in_a_diffusiondb_zip_is_refused_at_ingest_and_at_release(tmp_path, monkeypatch, case):
    """zipfile reads the last copy of a name (its index keeps the last), another tool the first: which
    image or listing a row meant is unknown, so neither is used."""
    monkeypatch.chdir(tmp_path)
    members, said = ZIP_REPEATS[case]
    part = Path("data/raw/db/part-000001.zip")
    part.parent.mkdir(parents=True)
    with zipfile.ZipFile(part, "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name": the hostile input itself
        for name, data in members:
            if isinstance(data, str):
                caption = "a red square" if data == "listing" else "a blue circle"
                data = json.dumps({"a.png": {"p": caption}, "b.png": {"p": "a green frog"}}).encode()
            zf.writestr(name, data)
    config = {
        "kind": "diffusiondb",
        "path": "data/raw/db",
        "read": "parts",
        "on_error": "skip",
        "max_member_bytes": CAP,
    }
    if said != "duplicate_key":
        with pytest.raises(DataError, match=said):
            ingest_rows(tmp_path, **config)
        return
    rows, report = ingest_rows(tmp_path, **config)
    assert [row["prompt"] for row in rows] == ["a green frog"], report
    assert report["skipped"].get("duplicate_key") == 1, report
    with pytest.raises(UnsafeArchive, match="more than once") as refused:
        read_member(make_ref(part, "a.png"))
    assert refused.value.reason == "duplicate_key"


# ---------------------------------------------------------------- 2. kaggle_sd2: row numbers as pandas counts
KAGGLE_CSVS = {  # the CSV's text; pandas.read_csv numbers the rows that name {row_index}.png
    "a blank line": "prompt\nprompt one\n\nprompt two\nprompt three\n",
    "whitespace-only lines": "prompt\n   \nprompt one\n\t\nprompt two\n \t \nprompt three\n",
    "a CRLF file with a blank line": "prompt\r\nprompt one\r\n\r\nprompt two\r\n  \r\nprompt three\r\n",
    "a quoted field holding newlines, then a blank line": 'prompt\n"prompt one,\nstill one\n\n"\n\nprompt two\nprompt three\n',
    "blank lines before the header": "\n \nprompt\nprompt one\nprompt two\n\nprompt three\n",
}


@pytest.mark.parametrize("case", KAGGLE_CSVS)
def test_kaggle_rows_take_the_image_pandas_numbers_them_by(tmp_path, monkeypatch, case):
    """A blank line was a bad row that still took a number: each later caption was paired with the next
    image (and the last image with none) at exit 0."""
    import pandas

    monkeypatch.chdir(tmp_path)
    folder = Path("data/raw/sd2")
    folder.mkdir(parents=True)
    (folder / "gpt_generated_prompts.csv").write_bytes(KAGGLE_CSVS[case].encode("utf-8"))
    for index in range(4):  # one image more than rows: a shifted pairing would still find an image
        (folder / f"{index}.png").write_bytes(png(8 + index))
    reference = pandas.read_csv(folder / "gpt_generated_prompts.csv", keep_default_na=False)["prompt"]
    expected = [(prompt, f"{folder.as_posix()}/{index}.png", 8 + index) for index, prompt in reference.items()]
    assert len(expected) == 3
    rows, report = ingest_rows(tmp_path, kind="kaggle_sd2", path=str(folder), on_error="skip")
    assert [(row["prompt"], row["image"], row["width"]) for row in rows] == expected, report
    assert set(report["skipped"]) <= {"blank_line"}, report


# ---------------------------------------------------------------- 3. line ends: \r\n, \r and \n, nothing else
TEXT_FILES = {  # a text file's bytes -> its prompts (one a line)
    "old Mac: CR only": (b"a red fox\rthe blue owl\ra green frog\r", ["a red fox", "the blue owl", "a green frog"]),
    "CR only, no last end": (b"a red fox\rthe blue owl\ra green frog", ["a red fox", "the blue owl", "a green frog"]),
    "CR, CRLF and LF mixed": (
        b"a red fox\r\nthe blue owl\ra green frog\n",
        ["a red fox", "the blue owl", "a green frog"],
    ),
    "U+2028 and U+0085 stay inside a CR-ended prompt": (
        "a red\u2028fox\rthe blue\x85owl\ra green\x0cfrog\r".encode(),
        ["a red\u2028fox", "the blue\x85owl", "a green\x0cfrog"],
    ),
}


@pytest.mark.parametrize("case", TEXT_FILES)
def test_text_lines_end_at_cr_lf_and_crlf_in_ingest_clean_text_dedup_text_and_synthesize(
    tmp_path, monkeypatch, capfd, case
):
    """ingest, clean-text and dedup-text split at "\\n" only: an old-Mac file was one prompt at exit 0;
    synthesize's example files split at every str.splitlines separator (U+2028 cut a prompt in two)."""
    from scripts.dedup import read_lines
    from scripts.lib.params.synthesize import ExampleSource
    from scripts.synthesize import read_example_pool

    data, prompts = TEXT_FILES[case]
    monkeypatch.chdir(tmp_path)
    Path("data/raw/t").mkdir(parents=True)
    Path("data/raw/t/prompts.txt").write_bytes(data)
    rows, report = ingest_rows(tmp_path, kind="text", path="data/raw/t")
    assert [row["prompt"] for row in rows] == prompts, report
    assert read_lines(Path("data/raw/t/prompts.txt")) == prompts  # dedup-text's lines
    assert read_example_pool(ExampleSource(path="data/raw/t", count=1)) == prompts
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    done = cli(["clean-text", "data/raw/t/prompts.txt", "out.jsonl", "--rules", "final"], tmp_path, monkeypatch, capfd)
    assert done.returncode == 0, done.stderr
    assert len((tmp_path / "out.jsonl").read_text(encoding="utf-8").split("\n")) == len(prompts) + 1


SEPARATORS = {  # characters str.splitlines breaks a line at, which json.dumps(ensure_ascii=False) keeps
    "U+2028 line separator": "\u2028",
    "U+2029 paragraph separator": "\u2029",
    "U+0085 next line": "\x85",
}


@pytest.mark.parametrize("case", SEPARATORS)
def test_a_caption_holding_a_line_separator_reads_back_from_metadata_jsonl_and_a_name_list(tmp_path, case):
    """read_metadata (publish and plots read a release's metadata.jsonl) used str.splitlines: the record
    was cut in two and the release refused; the generation store's name list cut a name the same way."""
    from scripts.lib.export import read_metadata
    from scripts.lib.name_lists import NameList

    text = f"a red{SEPARATORS[case]}fox"
    records = [
        {"file_name": "images/a.png", "id": "a", "source": "s", "text": text},
        {"file_name": "images/b.png", "id": "b", "source": "s", "text": "an owl"},
    ]
    lines = [json.dumps(record, ensure_ascii=False) for record in records]  # as write_imagefolder writes them
    (tmp_path / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert read_metadata(tmp_path, ("file_name", "id", "source", "text")) == records
    names = NameList(tmp_path / "index.txt")
    names.add(f"ab/{text}.png")
    names.add("cd/other.png")
    assert names.names() == {f"ab/{text}.png", "cd/other.png"}


# ---------------------------------------------------------------- 4. file extensions in any case
CASED_SOURCES = {  # kind -> the files of its folder (the upper-cased one was left out), and the rows expected
    "text": (
        {"prompts.txt": b"a red fox\n", "MORE.TXT": b"the blue owl\n", "Extra.Txt": b"a green frog\n"},
        {"a red fox", "the blue owl", "a green frog"},
    ),
    "openprompts": (
        {
            "a.csv": b'prompt,raw_data\na red fox,"{}"\n',
            "B.CSV": b'prompt,raw_data\nthe blue owl,"{}"\n',
        },
        {"a red fox", "the blue owl"},
    ),
    "dalle3": (
        {"data-000000.tar": [("a.png", SMALL), ("a.json", dalle3_json("a red fox"))]},
        {"a red fox", "the blue owl"},
    ),
}
CASED_SOURCES["dalle3"][0]["DATA-000001.TAR"] = [("b.png", SMALL), ("b.json", dalle3_json("the blue owl"))]


@pytest.mark.parametrize("kind", CASED_SOURCES)
def test_a_source_file_with_an_upper_case_extension_is_read(tmp_path, monkeypatch, kind):
    """`*.txt`, `*.csv`, `*.tar` were matched case-sensitively: PROMPTS.TXT or DATA-000001.TAR beside
    matching files was left out at exit 0 (and read on Windows and macOS)."""
    monkeypatch.chdir(tmp_path)
    files, expected = CASED_SOURCES[kind]
    folder = Path("data/raw/src")
    folder.mkdir(parents=True)
    for name, data in files.items():
        if isinstance(data, list):
            write_members(folder / name, data)
        else:
            (folder / name).write_bytes(data)
    rows, report = ingest_rows(tmp_path, kind=kind, path=str(folder))
    assert {row["prompt"] for row in rows} == expected, report
    assert len({row["id"] for row in rows}) == len(rows)


@pytest.mark.parametrize("name", ["PART-000003.ZIP", "part-000003.ZIP", "Part-000003.zip"])
def test_a_diffusiondb_part_zip_named_in_another_case_is_one_line(tmp_path, monkeypatch, name):
    """Part zips are found by their exact name part-NNNNNN.zip: another case was left out at exit 0; now
    it is refused in one line naming it, as any other misnamed part is."""
    monkeypatch.chdir(tmp_path)
    folder = Path("data/raw/db")
    folder.mkdir(parents=True)
    for file in ("part-000001.zip", name):
        with zipfile.ZipFile(folder / file, "w") as zf:
            zf.writestr("a.png", SMALL)
            zf.writestr(f"{Path(file).stem}.json", json.dumps({"a.png": {"p": "a red fox"}}))
    with pytest.raises(DataError, match=f"{name}: not a DiffusionDB part name") as refused:
        ingest_rows(tmp_path, kind="diffusiondb", path=str(folder), read="parts")
    assert "\n" not in str(refused.value)
