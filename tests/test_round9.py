"""The ninth hostile round's breaks, one table each (every row failed before its fix): a rule that
backtracks on the empty text hung rule loading outside the regex bound; a tiny T2I_REGEX_SECONDS made the
timer fire so often the process could neither run nor stop; a Ray address's password was printed.
Real commands as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_round8_regex import write_params

from helpers.repos import REPO
from helpers.tiers import fast_first


def run(argv: list[str], root: Path, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scripts", *argv],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ---------------------------------------------------------------- a rule slow on the empty text, at load
EMPTY_TEXT_BLOWUPS = {  # 2**N ways to match nothing, then a failing lookahead
    "empty alternation repeated": r"(?:|){40}(?!)",
    "two empty branches repeated": r"(?:(?:)|(?:)){40}(?!)",
    "nested empty stars": r"(?:(?:)*|){38}(?!)",
}


@pytest.mark.parametrize("case", fast_first(EMPTY_TEXT_BLOWUPS, keep=2))
@pytest.mark.parametrize("command", [["clean-rules", "rules.json"], ["clean-text", "in.txt", "out.jsonl"]])
def test_a_rule_that_backtracks_on_the_empty_text_fails_at_load_in_one_line(tmp_path, case, command):
    write_params(tmp_path, "finish", EMPTY_TEXT_BLOWUPS[case])
    (tmp_path / "in.txt").write_text("a red fox\n", encoding="utf-8")
    done = run(command, tmp_path, T2I_REGEX_SECONDS="0.5")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "on the empty text" in lines[0], done.stderr
    assert not (tmp_path / "rules.json").exists() and not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("seconds", ["1e-9", "0.000001", "0.001"])
def test_a_tiny_regex_bound_still_lets_the_command_run(tmp_path, seconds):
    """A bound of 1e-9 s made SIGALRM fire without pause: clean-text ran past 10 minutes, deaf to SIGTERM."""
    (tmp_path / "params.yaml").write_bytes((REPO / "params.yaml").read_bytes())
    (tmp_path / "in.txt").write_text("a red fox in the snow\n" * 200, encoding="utf-8")
    done = run(["clean-text", "in.txt", "out.jsonl"], tmp_path, timeout=60, T2I_REGEX_SECONDS=seconds)
    assert done.returncode == 0, done.stderr
    assert len((tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()) == 200


# ---------------------------------------------------------------- a Ray address's password is never printed
ADDRESSES = {
    "user and password, no scheme": "alice:S3cretPassw0rd@127.0.0.1:1",
    "a password only": ":S3cretPassw0rd@localhost:1",
    "no port": "bob:S3cretPassw0rd@127.0.0.1",
}


@pytest.mark.parametrize("case", ADDRESSES)
def test_a_ray_address_with_a_password_is_one_line_without_it(tmp_path, case):
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["runtime"] = {"engine": "ray", "ray_address": ADDRESSES[case], "connect_timeout_s": 2}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    (tmp_path / "in.txt").write_text("a red fox\na red fox!\n", encoding="utf-8")
    done = run(["dedup-text", "in.txt", "out.jsonl"], tmp_path, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "cannot start or join Ray" in lines[0], done.stderr
    assert "S3cretPassw0rd" not in done.stderr and not (tmp_path / "out.jsonl").exists()


# ---------------------------------------------------------------- a member name twice in one tar sample
def _png(colour: tuple[int, int, int]) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 6), colour).save(buf, format="PNG")
    return buf.getvalue()


TWICE = {  # the members of one sample, a name repeated: which copy is the sample's?
    "the image twice": ["0001.png", "0001.json", "0001.png"],
    "the json twice": ["0001.json", "0001.png", "0001.json"],
    "the image twice, adjacent": ["0001.png", "0001.png", "0001.json"],
}


@pytest.mark.parametrize("case", TWICE)
def test_a_sample_holding_a_member_name_twice_is_refused_whole(tmp_path, case):
    """ingest took the first copy (its caption, its size) and a release read the last one's bytes: a
    caption paired with another image at exit 0. Now the sample is skipped and counted, or one line."""
    import json

    from helpers.archives import write_tar
    from scripts.ingest import ingest
    from scripts.lib.errors import DataError
    from scripts.lib.readers import SourceConfig

    records = {0: {"image_name": "0001.png", "short_caption": "a red square", "width": 8, "height": 6}}
    record_b = dict(records[0], short_caption="a blue circle")
    members, seen = [], {"png": 0, "json": 0}
    for name in TWICE[case]:
        ext = name.rsplit(".", 1)[1]
        copy = seen[ext]
        seen[ext] += 1
        data = (
            _png((255, 0, 0) if copy == 0 else (0, 0, 255))
            if ext == "png"
            else json.dumps([records[0], record_b][copy])
        )
        members.append((name, data if isinstance(data, bytes) else data.encode()))
    members += [
        ("0002.png", _png((0, 255, 0))),
        ("0002.json", json.dumps(dict(records[0], image_name="0002.png")).encode()),
    ]
    write_tar(tmp_path / "d" / "data-000000.tar", members)
    report = ingest("d", SourceConfig(kind="dalle3", path=str(tmp_path / "d"), on_error="skip"), tmp_path / "p.parquet")
    assert report["rows_written"] == 1 and report["skipped"] == {"duplicate_key": 1}, report
    with pytest.raises(DataError, match="appears twice in sample '0001'"):
        ingest("d", SourceConfig(kind="dalle3", path=str(tmp_path / "d")), tmp_path / "q.parquet")
