"""`python -m scripts history-table [--releases data/releases]`: the reference history's counts, ours
next to the team's.

DESIGN.md §6 (and the team's log it summarises, songjein/image-to-prompts-28th-solution README at
196e689) gives row counts for v2 … v4-b. This prints them as a Markdown table beside the same counts
read from our releases' `stats.json` (scripts/release.py `release_stats`: `rows.{train,validation,total}`,
`by_source.<split>.<source>`, `removed.total`). Ours are from whatever data the releases were built
on (the sample data by default), so the point is the shape, not equal numbers. A release without a
`stats.json` shows `not built`; one that cannot be read shows `unreadable`.

Every number of the log is kept with the log's own words (`log`), or with the sum it is of numbers the
log gives (`log` then reads like `23116 − 3901`); tests/test_history_table.py checks both against the
team log's text.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import typer

from scripts.lib.errors import DataError
from scripts.lib.nesting import loads_json

RELEASES = ("v2", "v3", "v4", "v4-a", "v4-b")


@dataclass(frozen=True)
class Count:
    release: str
    what: str
    theirs: int
    log: str  # the log's words (exact text of the team log), or a sum of its numbers: "23116 − 3901"
    ours: tuple  # ("rows", split) | ("by_source", split, source) | ("removed",) | ("delta", split, base release)


LOG: tuple[Count, ...] = (
    Count("v2", "train rows", 155813, "학습 데이터 11010 건 제거 (155813 건)", ("rows", "train")),
    Count("v2", "validation rows", 8765, "벨리데이션 데이터 33 건 제거 (8765 건)", ("rows", "validation")),
    Count("v2", "rows removed (near-duplicates: 11,010 train, 33 validation)", 11043, "11010 + 33", ("removed",)),
    Count("v3", "train rows", 193994, "학습 데이터 193994 건", ("rows", "train")),
    Count("v3", "validation rows", 14933, "벨리데이션 데이터 14933 건", ("rows", "validation")),
    Count("v3", "train rows from ChatGPT", 23830, "23830 건", ("by_source", "train", "chatgpt")),
    Count("v3", "validation rows from ChatGPT", 1248, "1248 건", ("by_source", "validation", "chatgpt")),
    Count("v3", "train rows from Gustavosta", 14351, "14351 건 (59367 건 제거)", ("by_source", "train", "gustavosta")),
    Count("v3", "validation rows from Gustavosta", 4920, "4920 건 (3272 건 제거)",
          ("by_source", "validation", "gustavosta")),
    Count("v4", "train rows", 237768, "train 237768 건 (v2 + openprompts 120k dedup)", ("rows", "train")),
    Count("v4", "train rows added to v2's (OpenPrompts batch 1)", 81955, "metadata_dedup.jsonl (81955 건)",
          ("delta", "train", "v2")),
    Count("v4", "validation rows (23,116, less 3,901 near train)", 19215, "23116 − 3901", ("rows", "validation")),
    Count("v4-a", "train rows", 286698, "총 286698 건 (학습셋만 업데이트)", ("rows", "train")),
    Count("v4-a", "train rows added to v4's (OpenPrompts batch 2)", 48930, "286698 − 237768", ("delta", "train", "v4")),
    Count("v4-a", "validation rows (only train updated)", 19215, "23116 − 3901", ("rows", "validation")),
    Count("v4-b", "train rows", 286670, "train 286670 건 (train/metadata_concat.jsonl)", ("rows", "train")),
    Count("v4-b", "validation rows", 13324, "validation 13324 건", ("rows", "validation")),
    Count("v4-b", "train rows change from v4-a (cleaning re-applied)", -28, "286670 − 286698", ("delta", "train", "v4-a")),
    Count("v4-b", "validation rows change from v4-a", -5891, "13324 − 23116 + 3901", ("delta", "validation", "v4-a")),
)

_FORMULA = re.compile(r"\d+(\s*[+−]\s*\d+)+")


def formula_value(text: str) -> int | None:
    """The value of a log entry that is a sum ("23116 − 3901"), None for the log's own words."""
    if not _FORMULA.fullmatch(text):
        return None
    return sum(int(n) * (-1 if sign == "−" else 1) for sign, n in re.findall(r"([+−]?)\s*(\d+)", text))


# ---------------------------------------------------------------- ours, from stats.json

NOT_BUILT, UNREADABLE = "not built", "unreadable"


def read_stats(releases: Path, names=RELEASES) -> dict[str, dict | str]:
    """release -> its stats.json, or NOT_BUILT / UNREADABLE."""
    found: dict[str, dict | str] = {}
    for name in names:
        path = Path(releases) / name / "stats.json"
        try:
            data = loads_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            found[name] = NOT_BUILT
            continue
        except (OSError, ValueError):
            found[name] = UNREADABLE
            continue
        found[name] = data if isinstance(data, dict) else UNREADABLE
    return found


def _number(stats: dict | str, *path: str, missing: int | None = None) -> int | str:
    """stats[path[0]][path[1]]...: an int, `missing` when only the last key is absent, else UNREADABLE."""
    if isinstance(stats, str):
        return stats
    node = stats
    for part in path[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    value = node.get(path[-1], missing) if isinstance(node, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else UNREADABLE


def our_count(count: Count, stats: dict[str, dict | str]) -> int | str:
    """Our number for one log count (an int), or why there is none (NOT_BUILT, UNREADABLE).
    A source absent from `by_source` has no rows in that split: 0."""
    kind, *args = count.ours
    own = stats.get(count.release, NOT_BUILT)
    if kind == "rows":
        return _number(own, "rows", args[0])
    if kind == "by_source":
        return _number(own, "by_source", args[0], args[1], missing=0)
    if kind == "removed":
        return _number(own, "removed", "total")
    split, base = args
    now, before = _number(own, "rows", split), _number(stats.get(base, NOT_BUILT), "rows", split)
    if isinstance(now, str) or isinstance(before, str):
        return now if isinstance(now, str) else f"{before} ({base})"
    return now - before


# ---------------------------------------------------------------- the table

def _cell(value: int | str, signed: bool) -> str:
    if isinstance(value, str):
        return value
    return f"{value:+,}" if signed else f"{value:,}"


def history_table(stats: dict[str, dict | str]) -> str:
    """The Markdown table: one line per log count, ours beside it."""
    lines = ["| release | count | log (theirs) | ours | in the log |", "|---|---|---:|---:|---|"]
    for count in LOG:
        signed = count.ours[0] == "delta"
        source = f"= {count.log}" if formula_value(count.log) is not None else f"“{count.log}”"
        lines.append(f"| {count.release} | {count.what} | {_cell(count.theirs, signed)} | "
                     f"{_cell(our_count(count, stats), signed)} | {source} |")
    return "\n".join(lines) + "\n"


def cli(
    releases: Path = typer.Option(Path("data/releases"), "--releases", help="folder holding <release>/stats.json"),
) -> None:
    """Print DESIGN.md §6's counts: the team log's numbers next to our releases' stats.json."""
    if not releases.is_dir():
        raise DataError(f"{releases}: no such folder (build the releases with `dvc repro`, or pass --releases)")
    print(f"Row counts of the reference history: the team's log (DESIGN.md §6) and ours ({releases}/<release>/stats.json)\n")
    print(history_table(read_stats(releases)), end="")
