"""The eighth hostile round's file breaks (synthesize@N, caption@S, their response cache, simpletuner and
simpletuner-config): files read through links, FIFOs that hung a run, files read whole into memory, values
echoed whole. Every row runs the real command in a subprocess under a hard timeout and a 2 GiB
address-space limit, so a regression fails (hangs are killed, memory runs out) instead of eating the
machine; every row failed before its fix.

- 15: a cache entry that is a FIFO, a link (to /dev/zero, to a reply elsewhere), a hard link, a 3 GB file,
  or a cache folder that is a link, is one line (entries: regular files with one name, read capped);
- 17: an example `path` naming a FIFO, /dev/zero or a 3 GB file without a newline is one line;
- 18: an examples folder's other files (links to 3 GB files, sparse files, subfolders) are not hashed;
- 22: a template field with a format spec or conversion is refused when params are read;
- 27: a run of 1000 requests of 1 MB bodies stays in bounded memory (they were all built up front);
- 28: caption's manifest.parquet that is a link is refused;
- 13: simpletuner's image_name without an image extension (x.txt: its caption overwrote it) is skipped;
- 19: simpletuner-config's config that is a link out, a 3 GB file, or holds a 2 MB value, is one short line.
"""

from __future__ import annotations

import io
import json
import os
import resource
import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image
from test_chat_hostile import caption_entry, one_error_line, synth_entry
from test_chat_round6 import Server, completion, json_reply

from helpers import REPO
from helpers.commands import CliResult
from helpers.tiers import fast_first

MEMORY_LIMIT = 2 << 30
SPARSE = 3 << 30


def run(argv: list, cwd: Path, timeout: float = 60, memory: int = MEMORY_LIMIT) -> CliResult:
    """`python -m scripts ARGV` in `cwd`, killed after `timeout` s (a hang fails the row), in `memory` bytes
    of address space (memory run out fails the row)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "scripts", *map(str, argv)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (memory, memory)),
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


def sparse(path: Path, size: int = SPARSE) -> Path:
    with open(path, "wb") as f:
        f.seek(size - 1)
        f.write(b"\0")
    return path


def write_params(root: Path, section: str, entry: dict) -> None:
    (root / "params.yaml").write_text(yaml.safe_dump({section: {"t": entry}}), encoding="utf-8")


def png(path: Path, colour=(1, 2, 3)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return path


# ---------------------------------------------------------------- 15: the response cache


def _fifo(entry: Path, outside: Path) -> None:
    os.mkfifo(entry)


def _link_to_dev_zero(entry: Path, outside: Path) -> None:
    entry.symlink_to("/dev/zero")


def _link_outside(entry: Path, outside: Path) -> None:
    outside.write_text(json.dumps({"response": completion("1. read from outside")}), encoding="utf-8")
    entry.symlink_to(outside)


def _hard_link_outside(entry: Path, outside: Path) -> None:
    outside.write_text(json.dumps({"response": completion("1. read from outside")}), encoding="utf-8")
    os.link(outside, entry)


def _sparse_entry(entry: Path, outside: Path) -> None:
    sparse(entry)


def _folder_is_a_link(entry: Path, outside: Path) -> None:
    cache = entry.parent
    elsewhere = outside.parent / "elsewhere"
    cache.rename(elsewhere)
    cache.symlink_to(elsewhere)


CACHE_CASES = {  # stage, how the cached entry is replaced, what the line says
    "synthesize-entry-fifo": ("synthesize", _fifo, "a FIFO"),
    "synthesize-entry-link-to-dev-zero": ("synthesize", _link_to_dev_zero, "symbolic link"),
    "synthesize-entry-link-outside": ("synthesize", _link_outside, "symbolic link"),
    "synthesize-entry-hard-link-outside": ("synthesize", _hard_link_outside, "hard link"),
    "synthesize-entry-3-GB": ("synthesize", _sparse_entry, "larger than"),
    "synthesize-cache-folder-link": ("synthesize", _folder_is_a_link, "symbolic link"),
    "caption-entry-fifo": ("caption", _fifo, "a FIFO"),
    "caption-entry-link-outside": ("caption", _link_outside, "symbolic link"),
    "caption-cache-folder-link": ("caption", _folder_is_a_link, "symbolic link"),
}


def _stage_entry(stage: str, root: Path, base_url: str) -> dict:
    if stage == "synthesize":
        return synth_entry(base_url, requests=1)
    png(root / "images" / "a.png")
    return caption_entry(root / "images", base_url, max_images=1)


@pytest.mark.parametrize("case", fast_first(sorted(CACHE_CASES), keep=3))
def test_a_cache_entry_or_folder_that_is_no_own_file_is_one_line(tmp_path, case):
    stage, replace, said = CACHE_CASES[case]
    with Server(json_reply(completion("1. a red kite"))) as server:
        write_params(tmp_path, stage, _stage_entry(stage, tmp_path, server.base_url))
        assert run([stage, "t", "out"], tmp_path).returncode == 0
        entry = next((tmp_path / "out" / "cache").glob("*.json"))
        if replace is not _folder_is_a_link:
            entry.unlink()
        replace(entry, tmp_path / "outside.json")
        result = run([stage, "t", "out"], tmp_path, timeout=30)
    line = one_error_line(result)
    assert said in line and "cache" in line, line
    if stage == "synthesize":  # the first run's prompts stay
        assert (tmp_path / "out" / "prompts.txt").read_text(encoding="utf-8") == "a red kite\n"


# ---------------------------------------------------------------- 17: an example path that never ends


def _example_fifo(root: Path) -> Path:
    os.mkfifo(root / "fifo.txt")
    return root / "fifo.txt"


def _example_link_to_fifo(root: Path) -> Path:
    os.mkfifo(root / "fifo")
    (root / "link.txt").symlink_to(root / "fifo")
    return root / "link.txt"


def _example_sparse(root: Path) -> Path:
    return sparse(root / "sparse.txt")


def _example_dev_zero(root: Path) -> Path:
    return Path("/dev/zero")


EXAMPLE_PATHS = {  # the example file, what the line says
    "fifo": (_example_fifo, "a FIFO"),
    "link-to-fifo": (_example_link_to_fifo, "a FIFO"),
    "3-GB-without-newline": (_example_sparse, "longer than"),
    "dev-zero": (_example_dev_zero, "a device"),
}


@pytest.mark.parametrize("case", sorted(EXAMPLE_PATHS))
def test_an_example_path_that_never_ends_is_one_line(tmp_path, case):
    make, said = EXAMPLE_PATHS[case]
    path = make(tmp_path)
    with Server(json_reply(completion())) as server:
        write_params(
            tmp_path, "synthesize", synth_entry(server.base_url, requests=1, examples=[{"path": str(path), "count": 1}])
        )
        result = run(["synthesize", "t", "out"], tmp_path, timeout=30)
    line = one_error_line(result)
    assert said in line, line
    assert not server.bodies


# ---------------------------------------------------------------- 18: the examples folder's hash


def _hash_link_to_3_gb(folder: Path) -> None:
    (folder / "notes.bin").symlink_to(sparse(folder.parent / "outside.bin"))


def _hash_sparse_log(folder: Path) -> None:
    sparse(folder / "big.log")


def _hash_sparse_in_subfolder(folder: Path) -> None:
    (folder / "sub").mkdir()
    sparse(folder / "sub" / "big.txt")


FOLDER_EXTRAS = {  # what else the examples folder holds
    "link-to-3-GB-outside": _hash_link_to_3_gb,
    "3-GB-log-file": _hash_sparse_log,
    "3-GB-file-in-a-subfolder": _hash_sparse_in_subfolder,
}


@pytest.mark.parametrize("case", sorted(FOLDER_EXTRAS))
def test_the_examples_folder_hash_reads_only_the_example_files(tmp_path, case):
    folder = tmp_path / "ex"
    folder.mkdir()
    (folder / "a.txt").write_text("a red kite over a hill\n", encoding="utf-8")
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "a.txt").write_text("a red kite over a hill\n", encoding="utf-8")
    FOLDER_EXTRAS[case](folder)
    with Server(json_reply(completion())) as server:
        write_params(
            tmp_path, "synthesize", synth_entry(server.base_url, requests=1, examples=[{"path": "ex", "count": 1}])
        )
        result = run(["synthesize", "t", "out"], tmp_path, timeout=60)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    from scripts.synthesize import file_sha256

    assert report["example_sources"][0]["sha256"] == file_sha256(alone)  # the same files read, the same hash


# ---------------------------------------------------------------- 22: a template's format spec


TEMPLATES = {
    "width-a-billion": "{examples:>999999999}",
    "centred-topics": "Examples {examples}, avoid [{avoid_topics:^1999999999}]",
    "conversion-and-width": "{examples!s:<1999999999}",
    "conversion-alone": "{examples!r} {avoid_topics}",
}


@pytest.mark.parametrize("case", sorted(TEMPLATES))
def test_a_template_field_with_a_format_spec_is_refused_when_params_are_read(tmp_path, case):
    write_params(tmp_path, "synthesize", synth_entry(requests=0, template=TEMPLATES[case]))
    result = run(["synthesize", "t", "out"], tmp_path, timeout=30)
    line = one_error_line(result)
    assert line.startswith("error: params.yaml: synthesize.t.template") and len(line) < 400, line


# ---------------------------------------------------------------- 27: request bodies streamed

LONG = "a very long example prompt " * 37  # ~1000 characters: 1000 of them make a 1 MB body


def _big_pool(root: Path) -> dict:
    (root / "pool.txt").write_text("".join(f"{i} {LONG}\n" for i in range(2000)), encoding="utf-8")
    return {"examples": [{"path": "pool.txt", "count": 1000}]}


def _two_pools(root: Path) -> dict:
    for name in ("a", "b"):
        (root / f"{name}.txt").write_text("".join(f"{name}{i} {LONG}\n" for i in range(1000)), encoding="utf-8")
    return {"examples": [{"path": "a.txt", "count": 500}, {"path": "b.txt", "count": 500}]}


def _long_fixed_examples(root: Path) -> dict:
    return {"fixed_examples": [f"{i} {LONG * 10}" for i in range(100)]}


BIG_RUNS = {  # 1000 requests of ~1 MB bodies each: 1 GB held at once before, in 768 MiB of address space
    "1000-examples-per-request": _big_pool,
    "two-sources-of-500": _two_pools,
    "long-fixed-examples": _long_fixed_examples,
}


@pytest.mark.parametrize("case", fast_first(sorted(BIG_RUNS)))
def test_a_run_of_large_requests_stays_in_bounded_memory(tmp_path, case):
    write_params(tmp_path, "synthesize", synth_entry(requests=1000, offline=True, **BIG_RUNS[case](tmp_path)))
    result = run(["synthesize", "t", "out"], tmp_path, timeout=240, memory=768 << 20)
    line = one_error_line(result)
    assert "1000 of 1000 requests not in" in line and "offline is true" in line, line


# ---------------------------------------------------------------- 28: caption's manifest


def _manifest_outside(root: Path) -> None:
    pd.DataFrame({"id": ["a"], "file": ["a.png"]}).to_parquet(root / "outside.parquet")
    (root / "images" / "manifest.parquet").symlink_to(root / "outside.parquet")


def _manifest_relative_link_out(root: Path) -> None:
    pd.DataFrame({"id": ["a"], "file": ["a.png"]}).to_parquet(root / "outside.parquet")
    (root / "images" / "manifest.parquet").symlink_to("../outside.parquet")


def _manifest_link_chain(root: Path) -> None:
    pd.DataFrame({"id": ["a"], "file": ["a.png"]}).to_parquet(root / "outside.parquet")
    (root / "hop.parquet").symlink_to(root / "outside.parquet")
    (root / "images" / "manifest.parquet").symlink_to(root / "hop.parquet")


def _manifest_link_inside(root: Path) -> None:
    (root / "images" / "sub").mkdir()
    pd.DataFrame({"id": ["a"], "file": ["a.png"]}).to_parquet(root / "images" / "sub" / "table.parquet")
    (root / "images" / "manifest.parquet").symlink_to("sub/table.parquet")


MANIFESTS = {
    "link-to-a-table-outside": _manifest_outside,
    "relative-link-out": _manifest_relative_link_out,
    "chain-of-links-out": _manifest_link_chain,
    "link-to-a-table-inside": _manifest_link_inside,
}


@pytest.mark.parametrize("case", sorted(MANIFESTS))
def test_a_manifest_that_is_a_link_is_refused(tmp_path, case):
    png(tmp_path / "images" / "a.png")
    MANIFESTS[case](tmp_path)
    with Server(json_reply(completion("a red square"))) as server:
        write_params(tmp_path, "caption", caption_entry(tmp_path / "images", server.base_url, max_images=1))
        result = run(["caption", "t", "out"], tmp_path, timeout=30)
    line = one_error_line(result)
    assert "manifest.parquet" in line and "symbolic link" in line, line
    assert not server.bodies


# ---------------------------------------------------------------- 13: simpletuner's image names


def shard(path: Path, names: list[str]) -> Path:
    with tarfile.open(path, "w") as tar:
        for i, name in enumerate(names):
            buffer = io.BytesIO()
            Image.new("RGB", (8, 8), (i * 30 % 256, 0, 0)).save(buffer, format="PNG")
            meta = json.dumps({"image_name": name, "short_caption": f"caption {i}", "width": 8, "height": 8})
            for member, data in ((f"{i:08d}.png", buffer.getvalue()), (f"{i:08d}.json", meta.encode())):
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


IMAGE_NAMES = {  # the records' image_name, --on-error, the images written
    "x.txt": (["x.txt"], "skip", []),
    "sub/y.txt": (["sub/y.txt"], "skip", []),
    "x.txt-then-x.png": (["x.txt", "x.png"], "skip", ["x.png"]),
    "notes.json": (["notes.json"], "skip", []),
    "upper-case-TXT-fails": (["x.TXT"], "fail", None),
}


@pytest.mark.parametrize("case", sorted(IMAGE_NAMES))
def test_an_image_name_without_an_image_extension_is_skipped(tmp_path, case):
    names, on_error, written = IMAGE_NAMES[case]
    shard(tmp_path / "s.tar", names)
    result = run(["simpletuner", "s.tar", "out.parquet", "--data-dir", "data", "--on-error", on_error], tmp_path)
    if written is None:
        line = one_error_line(result)
        assert "image extension" in line, line
        return
    assert result.returncode == 0, result.stderr
    assert f"bad_image_name {len(names) - len(written)}" in result.stdout, result.stdout
    assert pd.read_parquet(tmp_path / "out.parquet")["filename"].tolist() == written
    for name in written:
        with Image.open(tmp_path / "data" / name) as image:
            assert image.format == "PNG"
        assert (tmp_path / "data" / name).with_suffix(".txt").read_text(encoding="utf-8").startswith("caption")


# ---------------------------------------------------------------- 19: simpletuner-config's config


def _config_link_to_3_gb(config: Path) -> None:
    config.symlink_to(sparse(config.parents[2] / "big.json"))


def _config_3_gb(config: Path) -> None:
    sparse(config)


def _config_link_to_a_config_outside(config: Path) -> None:
    outside = config.parents[2] / "outside.json"
    outside.write_text(json.dumps([{"id": "x", "instance_data_dir": "train"}]), encoding="utf-8")
    config.symlink_to(outside)


def _config_value_2_mb_list(config: Path) -> None:
    config.write_text(json.dumps([{"instance_data_dir": ["a" * 2_000_000]}]), encoding="utf-8")


def _config_value_2_mb_path_out(config: Path) -> None:
    config.write_text(json.dumps([{"instance_data_dir": "../" + "x" * 2_000_000}]), encoding="utf-8")


def _config_value_2_mb_cache_dir(config: Path) -> None:
    config.write_text(json.dumps([{"cache_dir": {"k": "\x1b[31m" * 400_000}}]), encoding="utf-8")


CONFIGS = {  # how the split's multidatabackend.json is made, what the line says
    "link-to-3-GB-outside": (_config_link_to_3_gb, "link out of the release"),
    "3-GB-file": (_config_3_gb, "larger than"),
    "link-to-a-config-outside": (_config_link_to_a_config_outside, "link out of the release"),
    "2-MB-list-value": (_config_value_2_mb_list, "is not a path"),
    "2-MB-path-out": (_config_value_2_mb_path_out, "is outside"),
    "2-MB-escape-codes-value": (_config_value_2_mb_cache_dir, "is not a path"),
}


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_a_release_config_is_read_bounded_and_echoed_short(tmp_path, case):
    make, said = CONFIGS[case]
    (tmp_path / "work" / "rel" / "train").mkdir(parents=True)
    make(tmp_path / "work" / "rel" / "train" / "multidatabackend.json")
    result = run(["simpletuner-config", "rel/train", "out.json"], tmp_path / "work", timeout=30)
    line = one_error_line(result)
    assert said in line and len(result.stderr) < 1000, result.stderr[:1000]
    assert "\x1b" not in result.stderr
    assert not (tmp_path / "work" / "out.json").exists()


# ---------------------------------------------------------------- the same shapes elsewhere


def _params_3_gb(root: Path) -> list:
    sparse(root / "params.yaml")
    return ["synthesize", "t", "out"]


def _long_unknown_template_field(root: Path) -> list:
    write_params(root, "synthesize", synth_entry(template="{" + "x" * 2_000_000 + "}"))
    return ["synthesize", "t", "out"]


def _long_image_name(root: Path) -> list:
    shard(root / "s.tar", ["../" + "y" * 200_000 + ".png"])
    return ["simpletuner", "s.tar", "out.parquet", "--on-error", "fail"]


def _long_manifest_file(root: Path) -> list:
    png(root / "images" / "a.png")
    pd.DataFrame({"id": ["a"], "file": ["../" + "z" * 2_000_000]}).to_parquet(root / "images" / "manifest.parquet")
    write_params(root, "caption", caption_entry(root / "images", max_images=1))
    return ["caption", "t", "out"]


def _long_params_value(root: Path) -> list:
    write_params(root, "synthesize", synth_entry(temperature="x" * 100_000))  # no digit: KEY_LIKE scanned n**2
    return ["synthesize", "t", "out"]


ELSEWHERE = {  # what the command reads, what its one line says (bounded in memory and length)
    "params-yaml-3-GB": (_params_3_gb, "larger than"),
    "template-field-2-MB": (_long_unknown_template_field, "unknown field"),
    "image-name-200-kB": (_long_image_name, "not a plain relative file name"),
    "manifest-file-2-MB": (_long_manifest_file, "leaves the images folder"),
    "params-value-100-kB": (_long_params_value, "synthesize.t.temperature"),
}


@pytest.mark.parametrize("case", sorted(ELSEWHERE))
def test_the_same_shapes_elsewhere_are_one_short_line(tmp_path, case):
    make, said = ELSEWHERE[case]
    result = run(make(tmp_path), tmp_path, timeout=30)
    line = one_error_line(result)
    assert said in line and len(result.stderr) < 1000, result.stderr[:1000]
