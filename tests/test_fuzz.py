"""Property-based fuzzing (hypothesis) of what a user hands the pipeline: params.yaml values and each
reader's input bytes: no traceback (only success or a one-line DataError), no
hang (every example runs under a SIGALRM bound), no write outside the stage folder.

(a) params.yaml: random values (wrong types, null, NaN, inf, huge and negative numbers, long strings,
    nested lists and mappings), random deletions and random new keys at random key paths of a copy of
    the repository's params.yaml, plus random YAML syntax typed into the text. Then `load_params` and
    `load_section` of every section, and what each stage checks on top (clean's rule compilation,
    dedup's band choice, release recipes and export options).
(b) readers: for every source kind, the small real samples in data/raw/ (a Kaggle SD2 set is made
    here) copied into a temp root and mutated (bytes flipped, cut, inserted, deleted, overwritten; JSON
    members, manifests, listings and parquet columns replaced by random values), then the ingest core
    in this process under `on_error` fail or skip: a report or a DataError, nothing written outside
    the stage folder, the inputs untouched.

Derandomized (a fixed sequence per test), no example database: every CI run tries the same cases.
The case count is printed at the end and must reach 2,000.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
import math
import os
import shutil
import signal
import tarfile
import tempfile
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from helpers import tar_bytes
from scripts.lib import params as P
from scripts.lib.errors import DataError

REPO = Path(__file__).resolve().parents[1]
RAW = REPO / "data" / "raw"
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
BOUND_S = 20  # no single example may run longer (a hang fails the test; typical examples take ~10 ms)
PARAMS_EXAMPLES = int(os.environ.get("FUZZ_PARAMS", 520))
READER_EXAMPLES = int(os.environ.get("FUZZ_READERS", 190))  # per source kind (8 kinds)
MINIMUM_CASES = 2000
COUNTS: dict[str, int] = {}

FUZZ = settings(
    deadline=5000,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


class Hang(BaseException):
    """Raised by the alarm: a BaseException, so no `except Exception` in the code under test eats it."""


@contextlib.contextmanager
def bounded(seconds: float = BOUND_S):
    def alarm(signum, frame):
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def count(name: str) -> None:
    COUNTS[name] = COUNTS.get(name, 0) + 1


def one_line(exc: DataError) -> str:
    text = str(exc)
    assert text and "\n" not in text and "\r" not in text, f"DataError is not one line: {text!r}"
    return text


# ==================================================================== (a) params.yaml values


def key_paths(node, prefix: tuple = ()) -> list[tuple]:
    """Every key path of the params tree: ('dedup', 'threshold'), ('clean', 'normalise', 0, 'pattern'), ..."""
    paths = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            paths += key_paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node[:3]):  # the first entries of long lists are enough
            paths += key_paths(value, prefix + (index,))
    return paths


def at(tree, path: tuple):
    for key in path:
        tree = tree[key]
    return tree


PATHS = key_paths(PARAMS)
MAPPING_PATHS = [()] + [p for p in PATHS if isinstance(at(PARAMS, p), dict)]  # where a new key can go
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
ODD_STRINGS = st.sampled_from(
    [
        "",
        " ",
        "x" * 100_000,
        "../../etc/passwd",
        "/",
        "${item.path}",
        "*a",
        "&a",
        "~",
        "null",
        "1e309",
        "NaN",
        "-1",
        "0x10",
        "\x00",
        "\u202e",
        "v2",
        "chatgpt",
        "train",
        "fail",
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 2**31, 2**63, 10**20]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e-320, 1e308, math.nan, math.inf]),
    TEXT,
    ODD_STRINGS,
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.one_of(
                TEXT, st.sampled_from(["kind", "path", "format", "source", "components", "threshold"]), st.integers()
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=10,
)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.sampled_from(PATHS), VALUES),
        st.tuples(st.just("delete"), st.sampled_from(PATHS), st.none()),
        st.tuples(st.just("add"), st.sampled_from(MAPPING_PATHS), st.tuples(TEXT | st.integers(), VALUES)),
    ),
    min_size=1,
    max_size=3,
)
TYPED = st.one_of(
    st.none(),
    st.tuples(st.floats(0, 1), st.text(st.sampled_from(list(":-[]{}&*!|>'\"#%@`,?~ \n\tab0")), min_size=1, max_size=6)),
)


def apply(params: dict, ops) -> dict:
    params = copy.deepcopy(params)
    for op, path, value in ops:
        if op == "add":
            key, value = value
        *parents, last = path if op != "add" else (*path, key)
        node = params
        try:
            for part in parents:
                node = node[part]
            if op == "delete":
                del node[last]
            elif isinstance(node, (dict, list)):
                node[last] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier op changed the shape: this one no longer applies
    return params


@pytest.fixture(scope="module")
def params_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz-params")


@pytest.fixture(scope="module")
def cached_yaml():
    """load_section re-reads params.yaml per call: parse each text once (the same loader, read once)."""
    real, memo = P.read_yaml, {}

    def read_yaml(text):
        if text not in memo:
            memo.clear()
            try:
                memo[text] = ("ok", real(text))
            except yaml.YAMLError as exc:
                memo[text] = ("error", exc)
        kind, value = memo[text]
        if kind == "error":
            raise value
        return value

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(P, "read_yaml", read_yaml)
        yield


def stage_checks(path: Path) -> None:
    """What the stages check at start, beyond the section models."""
    from scripts.lib.cleaning import load_rules
    from scripts.lib.export import export_options
    from scripts.lib.minhash import choose_bands
    from scripts.lib.recipe import resolve_recipe

    params = P.load_params(path=path)
    for section in P.SECTION_MODELS:
        P.load_section(section, path, missing_ok=True)
    if params.get("clean") is not None:
        load_rules(P.load_params("clean", path), fast=False)
    dedup = P.load_section("dedup", path, missing_ok=True)
    if dedup.bands is None:
        choose_bands(dedup.threshold, dedup.num_perm, dedup.target_recall)
    releases = params.get("releases") or {}
    for name in releases:
        recipe = resolve_recipe(name, releases)
        export_options(recipe.export.spec(), f"params.yaml: releases.{name}")


@settings(FUZZ, max_examples=PARAMS_EXAMPLES)
@given(ops=OPS, typed=TYPED)
def test_params_values_give_success_or_one_line(params_dir, cached_yaml, ops, typed):
    count("params.yaml")
    try:
        text = yaml.dump(apply(PARAMS, ops), Dumper=yaml.CSafeDumper, sort_keys=False, allow_unicode=True)
    except (yaml.YAMLError, ValueError, TypeError):
        reject()
    if typed is not None:  # characters typed at a random place: YAML syntax, anchors, aliases, tags
        at = int(typed[0] * len(text))
        text = text[:at] + typed[1] + text[at:]
    path = params_dir / "params.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        with bounded():
            stage_checks(path)
    except DataError as exc:
        assert "params.yaml" in one_line(exc), str(exc)
    except Hang as exc:
        pytest.fail(f"params.yaml check hung: {exc}")


# ==================================================================== (b) each reader's input bytes


def png(width: int, height: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 90)).save(buf, format="PNG")
    return buf.getvalue()


def _csv_head(source: Path, rows: int) -> bytes:
    with source.open(newline="", encoding="utf-8") as f:
        records = [row for _, row in zip(range(rows + 1), csv.reader(f))]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(records)
    return out.getvalue().encode("utf-8")


def _kaggle_files() -> dict[str, bytes]:
    files = {"gpt_generated_prompts.csv": b'prompt\n"a red fox in the snow"\n"a grey owl, oil painting"\na blue jay\n'}
    for i, size in enumerate([(8, 6), (16, 16), (5, 9)]):
        files[f"{i}.png"] = png(*size)
    return files


def _raw(folder: str, *names: str) -> dict[str, bytes]:
    return {name: (RAW / folder / name).read_bytes() for name in names}


# kind name -> (source config beside `path`, {file under the source folder: bytes})
KINDS = {
    "text": ({"kind": "text"}, _raw("chatgpt", "prompts.txt")),
    "openprompts": ({"kind": "openprompts"}, {"batch.csv": _csv_head(next((RAW / "openprompts").glob("*.csv")), 25)}),
    "gustavosta": ({"kind": "gustavosta"}, _raw("gustavosta", "data/train.parquet", "data/eval.parquet")),
    "diffusiondb_metadata": ({"kind": "diffusiondb", "read": "metadata"}, _raw("diffusiondb", "metadata.parquet")),
    "diffusiondb_parts": ({"kind": "diffusiondb", "read": "parts"}, _raw("diffusiondb", "part-000001.zip")),
    "kaggle_sd2": ({"kind": "kaggle_sd2", "csv_files": ["gpt_generated_prompts.csv"]}, _kaggle_files()),
    "dalle3": ({"kind": "dalle3"}, _raw("dalle3", "data-000000.tar")),
    "bucketed_webdataset": (
        {"kind": "bucketed_webdataset"},
        {
            str(p.relative_to(RAW / "laion_buckets")): p.read_bytes()
            for p in sorted((RAW / "laion_buckets").rglob("*"))
            if p.is_file()
        },
    ),
}

POSITION = st.floats(0, 1)
BYTE_EDITS = st.lists(
    st.one_of(
        st.tuples(st.just("flip"), POSITION, st.integers(0, 7)),
        st.tuples(st.just("cut"), POSITION, st.none()),
        st.tuples(st.just("insert"), POSITION, st.binary(min_size=1, max_size=64)),
        st.tuples(st.just("delete"), POSITION, st.integers(1, 600)),
        st.tuples(
            st.just("overwrite"),
            POSITION,
            st.binary(min_size=1, max_size=64)
            | st.sampled_from(
                [b"\x00" * 512, b"\xff" * 8, b'"', b"\n", b"\r", b",", b"[" * 200, b"ustar\x00", b"PK\x03\x04", b"PAR1"]
            ),
        ),
    ),
    min_size=1,
    max_size=4,
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            TEXT
            | st.sampled_from(
                [
                    "width",
                    "height",
                    "w",
                    "h",
                    "target_w",
                    "target_h",
                    "short_caption",
                    "image_name",
                    "buckets",
                    "shards",
                    "format",
                    "p",
                    "se",
                    "bucket_id",
                ]
            ),
            inner,
            max_size=5,
        )
    ),
    max_leaves=12,
)


def edit_bytes(data: bytes, edits) -> bytes:
    data = bytearray(data)
    for op, where, arg in edits:
        at = min(int(where * len(data)), max(len(data) - 1, 0))
        if op == "flip" and data:
            data[at] ^= 1 << arg
        elif op == "cut":
            del data[at:]
        elif op == "insert":
            data[at:at] = arg
        elif op == "delete":
            del data[at : at + arg]
        elif op == "overwrite":
            data[at : at + len(arg)] = arg
    return bytes(data)


def _tar_members(data: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]


def replace_member(data: bytes, suffix: str, pick: float, new: bytes) -> bytes:
    """A tar (rebuilt, valid) or zip whose `pick`-th member ending in `suffix` holds `new`."""
    if data[:2] == b"PK":
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            members = [(i.filename, zf.read(i)) for i in zf.infolist()]
    else:
        members = _tar_members(data)
    chosen = [i for i, (name, _) in enumerate(members) if name.endswith(suffix)]
    if chosen:
        index = chosen[min(int(pick * len(chosen)), len(chosen) - 1)]
        members[index] = (members[index][0], new)
    if data[:2] != b"PK":
        return tar_bytes(members)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, member in members:
            zf.writestr(name, member)
    return buf.getvalue()


ARROW_TYPES = {  # a column replaced by one of these, values from hypothesis
    "int64": (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    "uint16": (pa.uint16(), st.integers(0, 2**16 - 1)),
    "float64": (pa.float64(), st.floats(allow_nan=True)),
    "string": (pa.string(), TEXT),
    "binary": (pa.binary(), st.binary(max_size=20)),
    "bool": (pa.bool_(), st.booleans()),
    "date32": (pa.date32(), st.dates()),
    "timestamp": (pa.timestamp("us"), st.datetimes()),
    "decimal": (pa.decimal128(12, 3), st.decimals(min_value=-(10**8), max_value=10**8, places=3, allow_nan=False)),
    "list_int": (pa.list_(pa.int64()), st.lists(st.integers(0, 5), max_size=3)),
    "null": (pa.null(), st.none()),
}


@st.composite
def parquet_column_change(draw):
    type_name = draw(st.sampled_from(sorted(ARROW_TYPES)))
    _kind, values = ARROW_TYPES[type_name]
    return draw(POSITION), type_name, draw(st.lists(st.none() | values, min_size=1, max_size=5))


def replace_column(data: bytes, change) -> bytes:
    pick, type_name, values = change
    table = pq.read_table(io.BytesIO(data))
    index = min(int(pick * table.num_columns), table.num_columns - 1)
    column = [values[i % len(values)] for i in range(table.num_rows)]
    try:
        array = pa.array(column, ARROW_TYPES[type_name][0])
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError):
        reject()
    buf = io.BytesIO()
    pq.write_table(table.set_column(index, table.field(index).name, array), buf)
    return buf.getvalue()


@st.composite
def mutation(draw, kind: str):
    """(file to change, how): raw byte edits, or a structure-aware change the format allows."""
    _, files = KINDS[kind]
    name = draw(st.sampled_from(sorted(files)))
    shapes = ["bytes"]
    if name.endswith(".json"):
        shapes += ["json"]
    if name.endswith(".tar"):
        shapes += ["member_json", "member_bytes"]
    if name.endswith(".zip"):
        shapes += ["member_json"]
    if name.endswith(".parquet"):
        shapes += ["column", "column"]
    if name.endswith((".csv", ".txt")):
        shapes += ["line"]
    shape = draw(st.sampled_from(shapes))
    if shape == "bytes":
        return name, shape, draw(BYTE_EDITS)
    if shape in ("json", "member_json"):
        return name, shape, (draw(POSITION), json.dumps(draw(JSON)).encode())
    if shape == "member_bytes":
        return (
            name,
            shape,
            (draw(POSITION), draw(st.binary(max_size=300)), draw(st.sampled_from(["json", "png", "jpg", "txt"]))),
        )
    if shape == "column":
        return name, shape, draw(parquet_column_change())
    return (
        name,
        shape,
        (draw(POSITION), draw(TEXT | ODD_STRINGS | st.sampled_from(['"', '","', "a\x00b", "\r", '"""']))),
    )


def mutate(files: dict[str, bytes], change) -> dict[str, bytes]:
    name, shape, arg = change
    data = files[name]
    if shape == "bytes":
        data = edit_bytes(data, arg)
    elif shape == "json":
        data = arg[1]
    elif shape == "member_json":
        data = replace_member(data, ".json", *arg)
    elif shape == "member_bytes":
        pick, new, suffix = arg
        data = replace_member(data, f".{suffix}", pick, new)
    elif shape == "column":
        data = replace_column(data, arg)
    else:
        pick, line = arg
        lines = data.split(b"\n")
        lines.insert(int(pick * len(lines)), line.encode("utf-8", "surrogateescape"))
        data = b"\n".join(lines)
    return {**files, name: data}


def listing(root: Path, skip: Path) -> dict[str, tuple]:
    """Every path under root but `skip`, with its type, size and mtime (files): nothing else may change."""
    found = {}
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if Path(folder, d) != skip]
        for name in dirs + names:
            stat = os.lstat(os.path.join(folder, name))
            is_dir = name in dirs  # a folder's own mtime moves when the stage folder appears in it
            found[os.path.relpath(os.path.join(folder, name), root)] = (
                stat.st_mode,
                None if is_dir else stat.st_size,
                None if is_dir else stat.st_mtime_ns,
            )
    return found


@pytest.fixture(scope="module")
def fuzz_base(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz-readers")


def check_reader(base: Path, kind: str, change, on_error: str) -> None:
    from scripts.ingest import ingest
    from scripts.lib.readers import SourceConfig

    config, files = KINDS[kind]
    count(kind)
    files = mutate(files, change)
    root = Path(tempfile.mkdtemp(dir=base))
    try:
        for name, data in files.items():
            (root / "src" / name).parent.mkdir(parents=True, exist_ok=True)
            (root / "src" / name).write_bytes(data)
        stage = root / "out"
        before = listing(base, stage)
        cwd = os.getcwd()
        os.chdir(root)  # relative paths of the source resolve inside the root
        try:
            with bounded():
                try:
                    report = ingest(
                        "fuzz", SourceConfig(path="src", on_error=on_error, **config), stage / "fuzz.parquet"
                    )
                except DataError as exc:
                    one_line(exc)
                    report = None
        except Hang as exc:
            pytest.fail(f"ingest of a mutated {kind} source hung: {exc}")
        finally:
            os.chdir(cwd)
        assert listing(base, stage) == before, "ingest wrote or changed something outside its stage folder"
        written = sorted(p.name for p in stage.iterdir()) if stage.exists() else []
        assert written == ([] if report is None else ["fuzz.parquet", "fuzz.report.json"]), written
        if report is not None:
            assert report["rows_written"] + sum(report["skipped"].values()) <= report["rows_read"]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def reader_test(kind: str):
    @settings(FUZZ, max_examples=READER_EXAMPLES)
    @given(change=mutation(kind), on_error=st.sampled_from(["fail", "skip"]))
    def test(fuzz_base, change, on_error):
        check_reader(fuzz_base, kind, change, on_error)

    test.__name__ = f"test_reader_{kind}_gives_a_report_or_one_line"
    return test


for _kind in KINDS:
    globals()[f"test_reader_{_kind}_gives_a_report_or_one_line"] = reader_test(_kind)


def test_the_unmutated_samples_ingest_cleanly(fuzz_base):
    """The fuzzing starts from inputs that work: a failure above is the mutation's doing."""
    from scripts.ingest import ingest
    from scripts.lib.readers import SourceConfig

    for kind, (config, files) in KINDS.items():
        root = Path(tempfile.mkdtemp(dir=fuzz_base))
        for name, data in files.items():
            (root / "src" / name).parent.mkdir(parents=True, exist_ok=True)
            (root / "src" / name).write_bytes(data)
        report = ingest("fuzz", SourceConfig(path=str(root / "src"), **config), root / "out" / "fuzz.parquet")
        assert report["rows_written"] >= 3, (kind, report)
        shutil.rmtree(root)


def test_case_count(capsys):
    """Runs last in this file: prints the cases tried, and checks the 2,000 when every fuzz test ran."""
    total = sum(COUNTS.values())
    with capsys.disabled():
        print(f"\nfuzz cases: {total} ({', '.join(f'{k} {v}' for k, v in sorted(COUNTS.items()))})")
    if len(COUNTS) < 1 + len(KINDS):
        pytest.skip("only some fuzz tests ran")
    assert total >= MINIMUM_CASES, COUNTS
