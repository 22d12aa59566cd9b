"""`python -m scripts history-table`: the reference history's counts (docs/contracts.md §7), the team log's
beside our stats.json."""

from __future__ import annotations

import json
import re
from pathlib import Path

from helpers import cli
from scripts.tools.history_table import LOG, formula_value

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"


def write_stats(root: Path, release: str, train: int, validation: int, by_source: dict, removed: int) -> None:
    """A stats.json with the documented keys only (scripts/release.py release_stats)."""
    stats = {
        "rows": {"train": train, "validation": validation, "total": train + validation},
        "by_source": by_source,
        "removed": {"total": removed},
    }
    (root / release).mkdir(parents=True)
    (root / release / "stats.json").write_text(json.dumps(stats), encoding="utf-8")


def table_rows(stdout: str) -> dict[tuple[str, str], tuple[str, str]]:
    """(release, count) -> (theirs, ours) from the printed Markdown table."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] in ("v2", "v3", "v4", "v4-a", "v4-b"):
            rows[cells[0], cells[1]] = (cells[2], cells[3])
    return rows


def test_ours_beside_theirs_and_missing_releases_say_not_built(tmp_path, monkeypatch, capfd):
    releases = tmp_path / "releases"
    write_stats(releases, "v2", 90, 6, {"train": {"diffusiondb": 90}, "validation": {"diffusiondb": 6}}, 4)
    write_stats(
        releases,
        "v3",
        1130,
        64,
        {
            "train": {"diffusiondb": 90, "chatgpt": 40, "gustavosta": 1000},
            "validation": {"diffusiondb": 6, "gustavosta": 58},
        },
        7,
    )
    write_stats(releases, "v4-a", 1500, 50, {"train": {}, "validation": {}}, 0)
    result = cli(["history-table", "--releases", releases], tmp_path, monkeypatch, capfd)
    assert result.returncode == 0 and "Traceback" not in result.stderr
    rows = table_rows(result.stdout)
    assert len(rows) == len(LOG)
    assert rows["v2", "train rows"] == ("155,813", "90")
    assert rows["v2", "validation rows"] == ("8,765", "6")
    assert rows["v2", "train rows removed as near-duplicates (per split)"] == (
        "11,010",
        "unreadable",
    )  # no removed_by_split
    assert rows["v3", "train rows"] == ("193,994", "1,130")
    assert rows["v3", "train rows from ChatGPT"] == ("23,830", "40")
    assert rows["v3", "validation rows from ChatGPT"] == ("1,248", "0")  # no chatgpt rows in that split
    assert rows["v3", "validation rows from Gustavosta"] == ("4,920", "58")
    assert rows["v4", "train rows"] == ("237,768", "not built")
    assert rows["v4-a", "train rows"] == ("286,698", "1,500")
    assert rows["v4-a", "train rows added to v4's (OpenPrompts batch 2)"] == ("+48,930", "not built (v4)")
    assert rows["v4-b", "validation rows change from v4-a"] == ("-5,891", "not built")
    write_stats(releases, "v4-b", 1490, 20, {"train": {}, "validation": {}}, 38)
    rows = table_rows(cli(["history-table", "--releases", releases], tmp_path, monkeypatch, capfd).stdout)
    assert rows["v4-b", "train rows change from v4-a (cleaning re-applied)"] == ("-28", "-10")
    assert rows["v4-b", "validation rows change from v4-a"] == ("-5,891", "-30")


def test_unreadable_stats_and_a_missing_folder_are_one_line_not_a_traceback(tmp_path, monkeypatch, capfd):
    releases = tmp_path / "releases"
    for name, text in (("v2", "{not json"), ("v3", "[1, 2]"), ("v4-b", json.dumps({"rows": {"train": "12"}}))):
        (releases / name).mkdir(parents=True)
        (releases / name / "stats.json").write_text(text, encoding="utf-8")
    result = cli(["history-table", "--releases", releases], tmp_path, monkeypatch, capfd)
    assert result.returncode == 0 and "Traceback" not in result.stderr
    rows = table_rows(result.stdout)
    assert rows["v2", "train rows"][1] == rows["v3", "train rows"][1] == rows["v4-b", "train rows"][1] == "unreadable"
    missing = cli(["history-table", "--releases", tmp_path / "nowhere"], tmp_path, monkeypatch, capfd)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nowhere'}: no such folder (build the releases with `dvc repro`, or pass --releases)"
    ]


def test_the_log_numbers_are_the_team_logs_text():
    seed = FIXTURES / "team-log-v2-to-v4b.txt"
    text = seed.read_text(encoding="utf-8")
    for count in LOG:
        value = formula_value(count.log)
        if value is None:  # the log's own words, holding the number
            assert count.log in text, count
            assert re.search(rf"(?<!\d){abs(count.theirs)}(?!\d)", count.log), count
        else:  # a sum of numbers the log gives
            assert value == count.theirs, count
            for number in re.findall(r"\d+", count.log):
                assert re.search(rf"(?<!\d){number} 건", text), (count, number)


def test_the_documented_history_numbers_are_in_the_table():
    contracts = REPO / "docs" / "contracts.md"
    section = contracts.read_text(encoding="utf-8").split("## 7. Releases: the reference history")[1].split("\n## ")[0]
    numbers = {int(n.replace(",", "")) for n in re.findall(r"\d{1,3}(?:,\d{3})+|(?<=after )\d+", section)}
    assert {155813, 11010, 8765, 33, 193994, 14933, 3901, 286670, 13324} <= numbers  # what the section states
    logged = {c.theirs for c in LOG} | {int(n) for c in LOG for n in re.findall(r"\d+", c.log)}
    assert numbers <= logged, numbers - logged


def test_removals_are_compared_with_the_same_steps_removals(tmp_path, monkeypatch, capfd):
    """A log count of one step's removals sits beside that step's removals (per split and reason), not the total."""
    releases, dedup, prefilter = tmp_path / "releases", tmp_path / "dedup", tmp_path / "prefilter"
    stats = {
        "rows": {"train": 90, "validation": 6, "total": 96},
        "by_source": {},
        "removed": {"clean:language": 3, "dedup:per_split": 9, "leak:exact": 1, "total": 13},
        "removed_by_split": {
            "train": {"clean:language": 2, "dedup:per_split": 7},
            "validation": {"clean:language": 1, "dedup:per_split": 2, "leak:exact": 1},
        },
    }
    (releases / "v2").mkdir(parents=True)
    (releases / "v2" / "stats.json").write_text(json.dumps(stats), encoding="utf-8")
    v4 = {
        "rows": {"train": 200, "validation": 40, "total": 240},
        "by_source": {},
        "removed": {"leak:near": 5, "total": 5},
        "removed_by_split": {"train": {}, "validation": {"leak:near": 5}},
    }
    (releases / "v4").mkdir(parents=True)
    (releases / "v4" / "stats.json").write_text(json.dumps(v4), encoding="utf-8")
    v4b = {
        "rows": {"train": 190, "validation": 30, "total": 220},
        "by_source": {},
        "removed": {"clean:ban_words": 8, "clean:max_chars": 12, "total": 20},
        "removed_by_split": {
            "train": {"clean:ban_words": 8, "clean:max_chars": 2},
            "validation": {"clean:max_chars": 10},
        },
    }
    (releases / "v4-b").mkdir(parents=True)
    (releases / "v4-b" / "stats.json").write_text(json.dumps(v4b), encoding="utf-8")
    dedup.mkdir()
    (dedup / "chatgpt.report.json").write_text(
        json.dumps({"rows_in": 196, "kept": 150, "removed": 46}), encoding="utf-8"
    )
    prefilter.mkdir()
    (prefilter / "openprompts.report.json").write_text(
        json.dumps({"steps": [{"release": "v4-a", "removed": 5}, {"release": "other", "removed": 100}]}),
        encoding="utf-8",
    )
    result = cli(
        ["history-table", "--releases", releases, "--dedup", dedup, "--prefilter", prefilter],
        tmp_path,
        monkeypatch,
        capfd,
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr
    rows = table_rows(result.stdout)
    assert rows["v2", "train rows removed as near-duplicates (per split)"] == ("11,010", "7")
    assert rows["v2", "validation rows removed as near-duplicates (per split)"] == ("33", "2")
    assert rows["v3", "ChatGPT prompts into their list's dedup (before rendering)"] == ("45,126", "196")
    assert rows["v3", "ChatGPT prompts kept by it"] == ("25,707", "150")
    assert rows["v4", "validation rows removed as near train rows (cross split)"] == ("3,901", "5")
    assert rows["v4", "validation rows before the cross-split step"] == ("23,116", "45")
    assert rows["v4-a", "OpenPrompts batch 2 rows removed near v2's train before rendering"] == ("22,643", "5")
    assert rows["v4-b", "train rows removed by the cleaning"] == ("28", "10")  # every clean:* reason, train only
    assert rows["v4-b", "validation rows removed by the cleaning"] == ("5,891", "10")
    assert rows["v3", "Gustavosta train rows removed as near-duplicates (per split)"][1] == "not built"
