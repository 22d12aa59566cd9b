"""`python -m scripts history-table [--releases data/releases]`: the reference history's counts, ours
next to the team's, like with like.

DESIGN.md §6 (and the team's log it summarises, songjein/image-to-prompts-28th-solution README at
196e689) gives row counts for v2 … v4-b. This prints them as a Markdown table beside the same counts
of our build: rows from each release's `stats.json`, removals of one step from its per-split removal
counts (`removed_by_split.<split>.<reason>`: near-duplicates beside near-duplicates, cleaning beside
cleaning), source-level dedup from data/dedup/S.report.json and removals before rendering from
data/prefilter/S.report.json. Ours are from whatever data was built (the sample by default; real-sized
inputs: docs/recipes.md), so on the sample the point is the shape. A missing file shows `not built`,
one that cannot be read `unreadable`; one a link leads out of its folder is one line (summary's rule). Every number of the log is kept with the log's own words (`log`),
or with the sum it is of numbers the log gives (`23116 − 3901`); tests check both against the log.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import typer

from scripts.lib.errors import DataError, shown, shown_lines
from scripts.lib.io import config_text
from scripts.lib.markdown_text import code_span
from scripts.lib.nesting import MAX_REPORT_BYTES, loads_json  # stats.json: 1 MiB at most
from scripts.summary import is_count  # summary's rule: a count 0 to 2**63-1

RELEASES = ("v2", "v3", "v4", "v4-a", "v4-b")


@dataclass(frozen=True)
class Count:
    release: str
    what: str
    theirs: int
    log: str  # the log's words (exact text of the team log), or a sum of its numbers: "23116 − 3901"
    # ("rows", split) | ("by_source", split, source) | ("removed", split, reason or "prefix:") |
    # ("before", split, reason) = rows + those removals | ("delta", split, base release) |
    # ("dedup", source, rows_in | kept) = dedup@S's report | ("prefilter", source, release) = removed before rendering
    ours: tuple


LOG: tuple[Count, ...] = (
    Count("v2", "train rows", 155813, "학습 데이터 11010 건 제거 (155813 건)", ("rows", "train")),
    Count("v2", "validation rows", 8765, "벨리데이션 데이터 33 건 제거 (8765 건)", ("rows", "validation")),
    Count(
        "v2",
        "train rows removed as near-duplicates (per split)",
        11010,
        "학습 데이터 11010 건 제거",
        ("removed", "train", "dedup:per_split"),
    ),
    Count(
        "v2",
        "validation rows removed as near-duplicates (per split)",
        33,
        "벨리데이션 데이터 33 건 제거",
        ("removed", "validation", "dedup:per_split"),
    ),
    Count(
        "v3",
        "ChatGPT prompts into their list's dedup (before rendering)",
        45126,
        "45126 chatgpt prompts에 dedup 적용",
        ("dedup", "chatgpt", "rows_in"),
    ),
    Count("v3", "ChatGPT prompts kept by it", 25707, "25707 건", ("dedup", "chatgpt", "kept")),
    Count("v3", "train rows", 193994, "학습 데이터 193994 건", ("rows", "train")),
    Count("v3", "validation rows", 14933, "벨리데이션 데이터 14933 건", ("rows", "validation")),
    Count("v3", "train rows from ChatGPT", 23830, "23830 건", ("by_source", "train", "chatgpt")),
    Count("v3", "validation rows from ChatGPT", 1248, "1248 건", ("by_source", "validation", "chatgpt")),
    Count("v3", "train rows from Gustavosta", 14351, "14351 건 (59367 건 제거)", ("by_source", "train", "gustavosta")),
    Count(
        "v3",
        "validation rows from Gustavosta",
        4920,
        "4920 건 (3272 건 제거)",
        ("by_source", "validation", "gustavosta"),
    ),
    Count(
        "v3",
        "Gustavosta train rows removed as near-duplicates (per split)",
        59367,
        "59367 건 제거",
        ("removed", "train", "dedup:per_split"),
    ),
    Count(
        "v3",
        "Gustavosta eval rows removed as near-duplicates (per split)",
        3272,
        "3272 건 제거",
        ("removed", "validation", "dedup:per_split"),
    ),
    Count(
        "v4",
        "OpenPrompts prompts kept by the 03-30 filter and their dedup (theirs: dedup, then filter)",
        192744,
        "192744 건 (./resources/openprompts_dedup_075_filtered.txt)",
        ("dedup", "openprompts", "kept"),
    ),
    Count("v4", "train rows", 237768, "train 237768 건 (v2 + openprompts 120k dedup)", ("rows", "train")),
    Count(
        "v4",
        "train rows added to v2's (OpenPrompts batch 1)",
        81955,
        "metadata_dedup.jsonl (81955 건)",
        ("delta", "train", "v2"),
    ),
    Count(
        "v4",
        "validation rows before the cross-split step",
        23116,
        "validation 23116 건",
        ("before", "validation", "leak:near"),
    ),
    Count(
        "v4",
        "validation rows removed as near train rows (cross split)",
        3901,
        "3901 건 제거",
        ("removed", "validation", "leak:near"),
    ),
    Count("v4", "validation rows (23,116, less 3,901 near train)", 19215, "23116 − 3901", ("rows", "validation")),
    Count(
        "v4-a",
        "OpenPrompts batch 2 rows removed near v2's train before rendering",
        22643,
        "중복 제거(22643개)",
        ("prefilter", "openprompts", "v4-a"),
    ),
    Count("v4-a", "train rows", 286698, "총 286698 건 (학습셋만 업데이트)", ("rows", "train")),
    Count("v4-a", "train rows added to v4's (OpenPrompts batch 2)", 48930, "286698 − 237768", ("delta", "train", "v4")),
    Count("v4-a", "validation rows (only train updated)", 19215, "23116 − 3901", ("rows", "validation")),
    Count("v4-b", "train rows", 286670, "train 286670 건 (train/metadata_concat.jsonl)", ("rows", "train")),
    Count("v4-b", "validation rows", 13324, "validation 13324 건", ("rows", "validation")),
    Count(
        "v4-b", "train rows change from v4-a (cleaning re-applied)", -28, "286670 − 286698", ("delta", "train", "v4-a")
    ),
    Count("v4-b", "validation rows change from v4-a", -5891, "13324 − 23116 + 3901", ("delta", "validation", "v4-a")),
    Count("v4-b", "train rows removed by the cleaning", 28, "286698 − 286670", ("removed", "train", "clean:")),
    Count(
        "v4-b",
        "validation rows removed by the cleaning",
        5891,
        "23116 − 3901 − 13324",
        ("removed", "validation", "clean:"),
    ),
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
    return {name: read_json(Path(releases) / name / "stats.json", releases) for name in names}


def read_reports(folder: Path, sources) -> dict[str, dict | str]:
    """source -> its <folder>/<source>.report.json (dedup@S, prefilter@S), or NOT_BUILT / UNREADABLE."""
    return {source: read_json(Path(folder) / f"{source}.report.json", folder) for source in sources}


def read_json(path: Path, root: Path) -> dict | str:
    """`path`'s JSON object; a link on its way out of `root` is one line, summary's rule (a stats.json a git
    checkout made a link to /elsewhere/stats.json was counted as the release's; these files are `cache: false`,
    never a link into DVC's cache)."""
    from scripts.lib.safe_paths import check_stays_in

    if os.path.lexists(path):  # a link to nothing is "not built", as before
        check_stays_in(path, root)
    try:
        # a FIFO there hung the command; 60 MB of `[]` (under config_text's own cap) took 1.5 GB and 13 s
        data = loads_json(config_text(path, MAX_REPORT_BYTES))
    except FileNotFoundError:
        return NOT_BUILT
    except (OSError, ValueError):
        return UNREADABLE
    return data if isinstance(data, dict) else UNREADABLE


def _number(stats: dict | str, *path: str, missing: int | None = None) -> int | str:
    """stats[path[0]][path[1]]...: an int, `missing` when only the last key is absent, else UNREADABLE."""
    if isinstance(stats, str):
        return stats
    node = stats
    for part in path[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    value = node.get(path[-1], missing) if isinstance(node, dict) else None
    return value if is_count(value) else UNREADABLE


def _removed(stats: dict | str, split: str, reason: str) -> int | str:
    """Rows of `split` removed for `reason` (a reason ending in ':' sums every reason it starts)."""
    if isinstance(stats, str):
        return stats
    by_reason = (
        stats.get("removed_by_split", {}).get(split) if isinstance(stats.get("removed_by_split"), dict) else None
    )
    if not isinstance(by_reason, dict):
        return UNREADABLE
    if not reason.endswith(":"):
        return _number(by_reason, reason, missing=0)
    values = [v for k, v in by_reason.items() if k.startswith(reason)]
    return sum(values) if all(is_count(v) for v in values) else UNREADABLE


def our_count(
    count: Count, stats: dict[str, dict | str], dedup: dict | None = None, prefilter: dict | None = None
) -> int | str:
    """Our number for one log count (an int), or why there is none (NOT_BUILT, UNREADABLE).
    A source absent from `by_source` has no rows in that split, a reason absent from removed_by_split none."""
    kind, *args = count.ours
    own = stats.get(count.release, NOT_BUILT)
    if kind == "rows":
        return _number(own, "rows", args[0])
    if kind == "by_source":
        return _number(own, "by_source", args[0], args[1], missing=0)
    if kind == "removed":
        return _removed(own, *args)
    if kind == "before":
        rows, gone = _number(own, "rows", args[0]), _removed(own, *args)
        return rows if isinstance(rows, str) else gone if isinstance(gone, str) else rows + gone
    if kind == "dedup":
        return _number((dedup or {}).get(args[0], NOT_BUILT), args[1])
    if kind == "prefilter":
        report = (prefilter or {}).get(args[0], NOT_BUILT)
        if isinstance(report, str):
            return report
        steps = report.get("steps")
        values = (
            [s.get("removed") for s in steps if isinstance(s, dict) and s.get("release") == args[1]]
            if isinstance(steps, list)
            else [None]
        )
        return sum(values) if all(is_count(v) for v in values) else UNREADABLE
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


def history_table(stats: dict[str, dict | str], dedup: dict | None = None, prefilter: dict | None = None) -> str:
    """The Markdown table: one line per log count, ours beside it."""
    lines = ["| release | count | log (theirs) | ours | in the log |", "|---|---|---:|---:|---|"]
    for count in LOG:
        signed = count.ours[0] == "delta"
        source = f"= {count.log}" if formula_value(count.log) is not None else f"“{count.log}”"
        lines.append(
            f"| {count.release} | {count.what} | {_cell(count.theirs, signed)} | "
            f"{_cell(our_count(count, stats, dedup, prefilter), signed)} | {source} |"
        )
    return "\n".join(lines) + "\n"


def cli(
    releases: Path = typer.Option(Path("data/releases"), "--releases", help="folder holding <release>/stats.json"),
    dedup: Path = typer.Option(Path("data/dedup"), "--dedup", help="folder holding dedup@S's <source>.report.json"),
    prefilter: Path = typer.Option(
        Path("data/prefilter"), "--prefilter", help="folder holding prefilter@S's <source>.report.json"
    ),
) -> None:
    """Print DESIGN.md §6's counts: the team log's numbers next to ours, like with like."""
    if not releases.is_dir():
        raise DataError(f"{releases}: no such folder (build the releases with `dvc repro`, or pass --releases)")
    sources = sorted({c.ours[1] for c in LOG if c.ours[0] in ("dedup", "prefilter")})
    # every file read before a line is printed: a FIFO there printed the heading, then the error (a table
    # redirected to a file was cut short at exit 2); the folder names are escaped as every printed path is
    table = history_table(read_stats(releases), read_reports(dedup, sources), read_reports(prefilter, sources))
    # the paths as code spans: bare, `<release>` was an HTML tag GitHub drops, and a folder's `_` or `<!--`
    # was Markdown (shown: escape codes escaped, as in every printed path)
    heading = (
        "Row counts of the reference history: the team's log (DESIGN.md §6) and ours "
        f"({code_span(shown(f'{releases}/<release>/stats.json'), 300)}, {code_span(shown(f'{dedup}/'), 300)} and "
        f"{code_span(shown(f'{prefilter}/<source>.report.json'), 300)})"
    )
    print(heading + "\n\n" + shown_lines(table), end="")
