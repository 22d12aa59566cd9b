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
    stats = {"rows": {"train": train, "validation": validation, "total": train + validation},
             "by_source": by_source, "removed": {"total": removed}}
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
    write_stats(releases, "v3", 1130, 64, {"train": {"diffusiondb": 90, "chatgpt": 40, "gustavosta": 1000},
                                           "validation": {"diffusiondb": 6, "gustavosta": 58}}, 7)
    write_stats(releases, "v4-a", 1500, 50, {"train": {}, "validation": {}}, 0)
    result = cli(["history-table", "--releases", releases], tmp_path, monkeypatch, capfd)
    assert result.returncode == 0 and "Traceback" not in result.stderr
    rows = table_rows(result.stdout)
    assert len(rows) == len(LOG)
    assert rows["v2", "train rows"] == ("155,813", "90")
    assert rows["v2", "validation rows"] == ("8,765", "6")
    assert rows["v2", "rows removed (near-duplicates: 11,010 train, 33 validation)"] == ("11,043", "4")
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
    assert missing.stderr.strip().splitlines() == [f"error: {tmp_path / 'nowhere'}: no such folder "
                                                   "(build the releases with `dvc repro`, or pass --releases)"]


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
