"""Pictures of the data for reviewers: a contact sheet per release and a near-duplicate sheet per source.

- `data/releases/V/preview.jpg` (written by release@V): a grid of sample images with their captions.
  The sample is deterministic: the rows whose sha256(id) sort first, so the same release always shows
  the same rows and a re-run changes no byte. Captions use PIL's built-in bitmap font (no system font).
  Geometry comes from params.yaml `preview` (scripts/lib/params/preview.py: Preview): the sheet is exactly
  `Preview.sheet_size` = (columns * thumb) x (rows * (thumb + caption_height)) pixels.
- `data/dedup/S.preview.html`: the largest near-duplicate clusters, each kept text beside the texts
  removed as its duplicates, with their Jaccard. Self-contained HTML (no script, no network), every
  text escaped. `python -m scripts dedup-preview S` writes it from existing dedup outputs.
"""

from __future__ import annotations

import hashlib
import heapq
import html
import re
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from scripts.lib.clusters_table import CLUSTER_COLUMNS, check_clusters, check_clusters_columns
from scripts.lib.errors import DataError, shown
from scripts.lib.io import atomic_path
from scripts.lib.params import Preview
from scripts.lib.tables import reads_as_text

CHAR_WIDTH, LINE_HEIGHT = 6, 12  # PIL's default bitmap font: 6 px per character, 11 px tall
BACKGROUND, INK, MISSING = (255, 255, 255), (20, 20, 20), (200, 200, 200)


# --- contact sheet -------------------------------------------------------------------------------


def sample_ids(ids, n: int) -> list[str]:
    """The n ids whose sha256 sorts first: a deterministic sample, unbiased by id order. A heap of n,
    not a sort: a release of 10M rows would hold 10M digests."""
    return heapq.nsmallest(n, ids, key=lambda i: hashlib.sha256(str(i).encode("utf-8")).hexdigest())


def wrap_caption(text: str, width_px: int, height_px: int) -> list[str]:
    """Word-wrap `text` into the lines that fit the caption box; the last line ends in "..." if cut."""
    per_line, max_lines = max(1, width_px // CHAR_WIDTH), height_px // LINE_HEIGHT
    if max_lines == 0:
        return []
    # the bitmap font covers latin-1 only: anything else becomes "?"
    text = " ".join(str(text).split()).encode("latin-1", "replace").decode("latin-1")
    lines, line = [], ""
    for word in text.split(" "):
        while len(word) > per_line:  # a word longer than a line is broken
            if line:
                lines.append(line)
                line = ""
            lines.append(word[:per_line])
            word = word[per_line:]
        candidate = f"{line} {word}" if line else word
        if len(candidate) <= per_line:
            line = candidate
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: per_line - 3].rstrip() + "..."
    return lines


def contact_sheet(items: list[tuple[Path | None, str]], geometry: Preview):
    """A PIL image: one cell per (image path, caption), row-major; a missing or unreadable image is a
    grey box (the sheet is for looking, not a check). Size is always `geometry.sheet_size`."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default_imagefont()  # bitmap font built into Pillow: same pixels everywhere
    sheet = Image.new("RGB", geometry.sheet_size, BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    cell_height = geometry.thumb + geometry.caption_height
    for index, (path, caption) in enumerate(items[: geometry.columns * geometry.rows]):
        x, y = (index % geometry.columns) * geometry.thumb, (index // geometry.columns) * cell_height
        thumb = _thumbnail(path, geometry.thumb)
        if thumb is None:
            draw.rectangle([x + 2, y + 2, x + geometry.thumb - 3, y + geometry.thumb - 3], fill=MISSING)
        else:
            sheet.paste(thumb, (x + (geometry.thumb - thumb.width) // 2, y + (geometry.thumb - thumb.height) // 2))
        for line_no, line in enumerate(wrap_caption(caption, geometry.thumb - 8, geometry.caption_height)):
            draw.text((x + 4, y + geometry.thumb + line_no * LINE_HEIGHT), line, fill=INK, font=font)
    return sheet


def _thumbnail(path: Path | None, size: int):
    from PIL import Image

    if path is None:
        return None
    from PIL import ImageOps

    from scripts.lib.pixels import opened, rgb

    try:
        with opened(path, str(path)) as image:
            # fit (up or down, aspect kept) into the cell less a 2 px gutter: 64 px renders stay visible
            return ImageOps.contain(rgb(image), (size - 4, size - 4), Image.Resampling.LANCZOS)
    except MemoryError:
        raise
    except Exception:  # PIL raises many kinds (a PNG chunk broken past its header: SyntaxError, a traceback)
        return None


# --- near-duplicate sheet ------------------------------------------------------------------------

_TOKEN = re.compile(r"\w+")

PAGE_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; width: 100%; margin-bottom: 1.5em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; text-align: left; }
td.kept { background: #eef7ee; width: 45%; }
td.jaccard { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
mark { background: #ffe08a; }
.id { color: #888; font-size: 80%; font-family: monospace; }
"""


def dedup_preview_html(
    clusters_df, kept_df, removed_df, n: int, title: str = "near-duplicates", text_column: str = "text"
) -> str:
    """An HTML page of the n largest clusters: each kept text beside the texts removed as its
    near-duplicates, with their Jaccard (words not in the kept text are highlighted).

    clusters_df: id (removed), duplicate_of (kept id), jaccard - as in data/dedup/S.clusters.parquet.
    kept_df / removed_df: tables with `id` and `text_column` holding those rows' texts (e.g. the
    dedup output and its input). Clusters are ordered by size, then kept id; removed rows by Jaccard
    (highest first), then id; so the page is the same bytes for the same inputs."""
    for name, df, columns in (
        ("clusters", clusters_df, CLUSTER_COLUMNS),
        ("kept", kept_df, ("id", text_column)),
        ("removed", removed_df, ("id", text_column)),
    ):
        _check_columns(f"dedup preview: {name} table", df.columns, columns)
    clusters = pa.table({c: pa.array(clusters_df[c]) for c in CLUSTER_COLUMNS})
    check_clusters(clusters, "dedup preview: clusters table")
    kept_text = dict(zip(kept_df["id"].astype(str), kept_df[text_column]))
    removed_text = dict(zip(removed_df["id"].astype(str), removed_df[text_column]))
    return cluster_page(largest_clusters(clusters, n), kept_text, removed_text, title)


def _check_columns(where: str, columns, wanted) -> None:
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise DataError(f"{where}: no column(s) {', '.join(missing)}")


ROWS_SHOWN = 100  # removed rows shown per cluster: a page a reviewer reads, whatever the cluster's size


class Clusters(NamedTuple):
    total: int  # clusters in all
    removed: int  # rows removed in all
    largest: list[tuple[str, list[tuple[float, str]]]]  # (kept id, [(jaccard, removed id)] best first, ROWS_SHOWN)
    sizes: dict[str, int]  # kept id -> its removed rows in all (more than shown in a cut cluster)


def largest_clusters(clusters: pa.Table, n: int, cap: int = ROWS_SHOWN) -> Clusters:
    """The n largest clusters of a clusters table (pyarrow: id, duplicate_of, jaccard), by size then kept id,
    each cut to its `cap` most similar removed rows (Jaccard highest first, then id). Counted, sorted and cut in
    Arrow: only the rows shown become Python objects (a cluster of 100,000 removed rows was a 12.6 MB page of
    100,001 table rows, each row a Python object first)."""
    ids = [clusters.column(c).cast(pa.large_string()) for c in ("id", "duplicate_of")]
    sizes = pa.table({"kid": ids[1]}).group_by("kid").aggregate([([], "count_all")])
    top = sizes.sort_by([("count_all", "descending"), ("kid", "ascending")]).slice(0, max(0, n))
    rows = pa.table({"kid": ids[1], "jaccard": clusters.column("jaccard").cast(pa.float64()), "rid": ids[0]})
    rows = rows.filter(pc.is_in(ids[1], value_set=top.column("kid").combine_chunks()))
    rows = rows.sort_by([("kid", "ascending"), ("jaccard", "descending"), ("rid", "ascending")])
    picked: list[int] = []
    start = 0
    for count in top.sort_by([("kid", "ascending")]).column("count_all").to_pylist():  # one run a cluster
        picked.extend(range(start, start + min(count, cap)))
        start += count
    cut = rows.take(pa.array(picked, pa.int64()))
    members: dict[str, list[tuple[float, str]]] = {kid: [] for kid in top.column("kid").to_pylist()}
    for kid, jac, rid in zip(*(cut.column(c).to_pylist() for c in ("kid", "jaccard", "rid"))):
        members[kid].append((float(jac), rid))
    totals = dict(zip(top.column("kid").to_pylist(), top.column("count_all").to_pylist()))
    return Clusters(sizes.num_rows, clusters.num_rows, list(members.items()), totals)


def cluster_caption(number: int, shown: int, removed: int) -> str:
    """`cluster N: K rows`, and for a cut cluster how many of its removed rows are shown and how many are not."""
    if removed <= shown:
        return f"cluster {number}: {shown + 1} rows"
    return (
        f"cluster {number}: {removed + 1:,} rows; the {shown:,} most similar removed rows shown, "
        f"and {removed - shown:,} more"
    )


def cluster_page(clusters: Clusters, kept_text: dict, removed_text: dict, title: str) -> str:
    """The page of `dedup_preview_html`; kept_text / removed_text: {id: text} of at least the rows shown."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{PAGE_STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p id="summary">{clusters.total:,} clusters, {clusters.removed:,} rows removed; '
        f"showing the {len(clusters.largest):,} largest.</p>",
    ]
    for number, (kid, rows) in enumerate(clusters.largest, start=1):
        keep = str(kept_text.get(kid, "(kept row not found)"))
        keep_words = {w.lower() for w in _TOKEN.findall(keep)}
        parts += [
            f'<table class="cluster" id="cluster-{number}">',
            f"<caption>{cluster_caption(number, len(rows), clusters.sizes.get(kid, len(rows)))}</caption>",
            "<tr><th>kept</th><th>removed</th><th>Jaccard</th></tr>",
        ]
        for i, (jac, rid) in enumerate(rows):
            kept_cell = (
                (
                    f'<td class="kept" rowspan="{len(rows)}">{html.escape(keep)}'
                    f'<div class="id">{html.escape(kid)}</div></td>'
                )
                if i == 0
                else ""
            )
            text = removed_text.get(rid)
            cell = _highlight(str(text), keep_words) if text is not None else "(removed row not found)"
            parts.append(
                f'<tr>{kept_cell}<td class="removed">{cell}<div class="id">{html.escape(rid)}</div></td>'
                f'<td class="jaccard">{jac:.3f}</td></tr>'
            )
        parts.append("</table>")
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def _highlight(text: str, keep_words: set[str]) -> str:
    """Escape `text`, marking the words that the kept text does not have."""
    out, last = [], 0
    for match in _TOKEN.finditer(text):
        out.append(html.escape(text[last : match.start()]))
        word = html.escape(match.group())
        out.append(word if match.group().lower() in keep_words else f"<mark>{word}</mark>")
        last = match.end()
    out.append(html.escape(text[last:]))
    return "".join(out)


def write_dedup_preview(
    source: str, clean_path: Path, dedup_path: Path, clusters_path: Path, output: Path, n: int
) -> None:
    """data/dedup/S.preview.html from the dedup stage's input, output and clusters (dedup_preview_page)."""
    page = dedup_preview_page(source, clean_path, dedup_path, clusters_path, n)
    with atomic_path(output) as tmp:
        tmp.write_text(page, encoding="utf-8")


def dedup_preview_page(source: str, clean_path: Path | str, dedup_path: Path, clusters_path: Path, n: int) -> str:
    """The preview page's HTML: its `n` largest clusters. Only the clusters table is read whole (removed
    rows only); the texts of the rows shown are picked from the other two."""
    from scripts.lib.dedup.stage_input import open_parquet, read

    clean, clusters_files, dedup = (open_parquet(p) for p in (clean_path, clusters_path, dedup_path))
    check_clusters_columns(clusters_path, clusters_files[0].schema_arrow.names)
    for path, files in ((dedup_path, dedup), (clean_path, clean)):
        schema = files[0].schema_arrow
        _check_columns(shown(path), schema.names, ("id", "text"))
        if not reads_as_text(schema.field("id").type):  # a list column failed the cast to text
            raise DataError(f"{shown(path)}: column 'id' must hold text, found {schema.field('id').type}")
    clusters = read(clusters_path, clusters_files[0].read, columns=list(CLUSTER_COLUMNS))
    check_clusters(clusters, clusters_path)  # text in jaccard, a null duplicate_of: one line, not a traceback
    picked = largest_clusters(clusters, n)
    kept_ids = [kid for kid, _ in picked.largest]
    removed_ids = [rid for _, rows in picked.largest for _, rid in rows]
    return cluster_page(
        picked,
        texts_by_id(dedup_path, dedup, kept_ids),
        texts_by_id(clean_path, clean, removed_ids),
        title=f"dedup@{source}: largest near-duplicate clusters",
    )


def texts_by_id(path: Path | str, files, ids: list[str]) -> dict[str, str]:
    """{id: text} of the rows of the parquet input at `path` whose id is in `ids`, read a batch at a time."""
    from scripts.lib.dedup.stage_input import READ_ROWS, batches_of

    wanted = pa.array(ids, pa.large_string())
    found: dict[str, str] = {}
    for batch in batches_of(path, files, ["id", "text"], READ_ROWS):
        hit = batch.filter(pc.is_in(batch.column(0).cast(pa.large_string()), value_set=wanted))
        found.update(zip(hit.column(0).cast(pa.large_string()).to_pylist(), hit.column(1).to_pylist()))
    return found
