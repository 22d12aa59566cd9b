"""The plot data of `dvc plots diff --json`, as pr-comment compares it: the PR's own plot files, so every
shape is checked (a list where an object was, 100k nested `[`) and the output read depth-bounded."""

from __future__ import annotations

from scripts.lib.nesting import loads_json

IGNORED_PLOT_FIELDS = {"rev", "filename", "field", "step"}  # added by DVC to every data point


def dvc_json(stdout: str) -> dict | None:
    """`dvc plots diff --json`'s output: an object whose `data` maps plot ids to lists of entries, else None.
    It holds the PR's own plot files, read depth-bounded (loads_json): 100k nested `[` was a RecursionError
    traceback, a list or a line that is not JSON an AttributeError or JSONDecodeError one."""
    try:
        found = loads_json(stdout or "{}")
    except ValueError:
        return None
    data = found.get("data", {}) if isinstance(found, dict) else None
    if not isinstance(data, dict) or not all(
        isinstance(v, list) and all(isinstance(e, dict) for e in v) for v in data.values()
    ):
        return None
    return found


def plot_changes(plots: dict, base_rev: str, head_rev: str) -> dict[str, tuple[list[dict], list[dict]]]:
    """plot id -> (data points only at base, only at head), from `dvc plots diff --json`."""
    head_name = "workspace" if head_rev == "workspace" else head_rev
    changes = {}
    for plot_id, entries in sorted(plots.get("data", {}).items()):
        by_rev: dict[str, set] = {base_rev: set(), head_name: set()}
        for entry in entries:
            if entry.get("type") != "vega":
                continue
            for point in _plot_points(entry):
                rev = point.get("rev")
                if isinstance(rev, str) and rev in by_rev:  # a list there was a TypeError (unhashable)
                    by_rev[rev].add(
                        tuple(sorted((k, str(v)) for k, v in point.items() if k not in IGNORED_PLOT_FIELDS))
                    )
        before, after = by_rev[base_rev], by_rev[head_name]
        if before != after:
            changes[plot_id] = ([dict(p) for p in sorted(before - after)], [dict(p) for p in sorted(after - before)])
    return changes


def _plot_points(entry: dict) -> list[dict]:
    """A vega entry's data points (content.data.values), those that are objects: the PR's plot file shapes them."""
    content = entry.get("content")
    data = content.get("data") if isinstance(content, dict) else None
    values = data.get("values") if isinstance(data, dict) else None
    return [point for point in values if isinstance(point, dict)] if isinstance(values, list) else []
