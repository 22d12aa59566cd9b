"""Contact sheets and the near-duplicate sheet, plus the progress line every long loop prints."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from scripts.lib.errors import DataError
from scripts.lib.export import read_metadata
from scripts.lib.params import Preview, parse
from scripts.lib.preview import contact_sheet, dedup_preview_html, sample_ids, wrap_caption
from scripts.lib.progress import summary_line, track
from scripts.release import write_preview

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def gpt4_prompts(n: int) -> list[str]:
    path = FIXTURES / "gpt4-prompts-3k.txt"
    lines = [line.strip().lstrip("- ") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines[:n]


def make_release(folder: Path, texts: list[str]) -> None:
    """A real ImageFolder release: JPEG files of different sizes and colours, metadata.jsonl per split."""
    for split, part in (("train", texts[: len(texts) - 3]), ("validation", texts[len(texts) - 3 :])):
        lines = []
        for i, text in enumerate(part):
            row_id = f"{split}{i:04d}"
            name = f"images/src/{row_id}.jpg"
            (folder / split / name).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (64 + 8 * i, 48 + 4 * i), (20 * i % 256, 90, 200)).save(folder / split / name)
            lines.append(
                json.dumps({"file_name": name, "text": text, "orig_text": text, "source": "src", "id": row_id})
            )
        (folder / split / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def release_rows(folder: Path) -> pd.DataFrame:
    """The release's rows as release@V holds them when it writes preview.jpg (image = stored file)."""
    records = [
        {"id": r["id"], "text": r["text"], "image": str(folder / split / r["file_name"])}
        for split in ("train", "validation")
        for r in read_metadata(folder / split, ("id", "file_name", "text"))
    ]
    return pd.DataFrame(records)


def write_release_preview(folder: Path, output: Path, geometry: Preview) -> None:
    rows = release_rows(folder)
    write_preview(rows["id"], lambda ids: rows.set_index("id").loc[ids], output, geometry)


# --- contact sheet -------------------------------------------------------------------------------


@pytest.mark.parametrize("columns, rows, thumb, caption_height", [(4, 3, 160, 48), (2, 5, 96, 0), (1, 1, 200, 60)])
def test_contact_sheet_is_a_jpeg_of_exactly_the_grid_size(tmp_path, columns, rows, thumb, caption_height):
    make_release(tmp_path / "v1", gpt4_prompts(20))
    geometry = Preview(columns=columns, rows=rows, thumb=thumb, caption_height=caption_height, quality=85)
    write_release_preview(tmp_path / "v1", tmp_path / "v1" / "preview.jpg", geometry)
    with Image.open(tmp_path / "v1" / "preview.jpg") as sheet:
        sheet.verify()
    with Image.open(tmp_path / "v1" / "preview.jpg") as sheet:
        assert sheet.format == "JPEG"
        assert sheet.size == (columns * thumb, rows * (thumb + caption_height))
        # every cell shows its image: the centre pixel of each thumbnail is not the white background
        pixels = sheet.convert("RGB")
        for cell in range(columns * rows):
            x = (cell % columns) * thumb + thumb // 2
            y = (cell // columns) * (thumb + caption_height) + thumb // 2
            assert pixels.getpixel((x, y)) != (255, 255, 255), f"cell {cell} is empty"


def test_sample_is_deterministic_and_independent_of_row_order(tmp_path):
    texts = gpt4_prompts(20)
    make_release(tmp_path / "a", texts)
    ids = [f"train{i:04d}" for i in range(17)] + [f"validation{i:04d}" for i in range(3)]
    assert sample_ids(ids, 5) == sample_ids(list(reversed(ids)), 5)
    assert sample_ids(ids, 5) != sorted(ids)[:5]  # hashed, not the first ids by name
    rows = release_rows(tmp_path / "a")
    assert sample_ids(rows["id"], 6) == sample_ids(rows["id"][::-1], 6)
    geometry = Preview(columns=3, rows=2, thumb=64, caption_height=24)
    write_release_preview(tmp_path / "a", tmp_path / "one.jpg", geometry)
    write_release_preview(tmp_path / "a", tmp_path / "two.jpg", geometry)
    assert (tmp_path / "one.jpg").read_bytes() == (tmp_path / "two.jpg").read_bytes()


def test_captions_are_drawn_under_the_images_and_cut_to_fit():
    geometry = Preview(columns=2, rows=1, thumb=120, caption_height=36)
    blank = contact_sheet([(None, ""), (None, "")], geometry)
    captioned = contact_sheet([(None, "a lighthouse " * 30), (None, "ünïcode ✓ 东京 tower at dusk")], geometry)
    caption_box = (0, 120, 240, 156)
    assert blank.crop(caption_box).getextrema() == ((255, 255), (255, 255), (255, 255))
    assert captioned.crop(caption_box).getextrema()[0][0] < 100  # dark text drawn
    lines = wrap_caption("a lighthouse " * 30, 112, 36)
    assert len(lines) == 3 and lines[-1].endswith("...") and all(len(line) <= 112 // 6 for line in lines)
    assert wrap_caption("東京 tower", 112, 36) == ["?? tower"]  # the bitmap font is latin-1 only


def test_missing_metadata_and_bad_geometry_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match=r"v9/train/metadata.jsonl: not found"):
        read_metadata(tmp_path / "v9" / "train", ("id", "file_name", "text"))
    (tmp_path / "v8" / "train").mkdir(parents=True)
    (tmp_path / "v8" / "train" / "metadata.jsonl").write_text('{"id": "x"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"v8/train/metadata.jsonl: line 1"):
        read_metadata(tmp_path / "v8" / "train", ("id", "file_name", "text"))
    # every reader of metadata.jsonl (contact sheet, plots, diff) names the line of a bad record
    for line in ['["not", "an", "object"]', "{not json", '"text"']:
        (tmp_path / "v8" / "train" / "metadata.jsonl").write_text("\n" + line + "\n", encoding="utf-8")
        with pytest.raises(DataError, match=r"v8/train/metadata.jsonl: line 2: not a metadata record with id"):
            read_metadata(tmp_path / "v8" / "train", ("id", "file_name", "text"))
    with pytest.raises(DataError, match=r"params.yaml: preview.thumb: .*greater than or equal to 16 \(got 0\)"):
        parse(Preview, {"thumb": 0}, at=("preview",))
    assert Preview().sheet_size == (640, 624)  # defaults = params.yaml's values


# --- near-duplicate sheet ------------------------------------------------------------------------


def dedup_tables():
    kept = pd.DataFrame(
        {"id": ["k1", "k2", "k3"], "text": ["a red fox in the snow", "a <b>bold</b> castle & moat", "a lone tree"]}
    )
    removed = pd.DataFrame(
        {
            "id": ["r1", "r2", "r3", "r4"],
            "text": [
                "a red fox in the deep snow",
                "a red fox in snow",
                "a <b>bold</b> castle & moat!",
                "<script>alert(1)</script> a lone tree",
            ],
        }
    )
    clusters = pd.DataFrame(
        {"id": ["r1", "r2", "r3", "r4"], "duplicate_of": ["k1", "k1", "k2", "k3"], "jaccard": [0.8, 0.75, 1.0, 0.71]}
    )
    return clusters, kept, removed


def test_dedup_preview_shows_largest_clusters_side_by_side_escaped():
    clusters, kept, removed = dedup_tables()
    page = dedup_preview_html(clusters, kept, removed, n=2, title="dedup@x")
    assert page.count('<table class="cluster"') == 2
    first, second = page.index('id="cluster-1"'), page.index('id="cluster-2"')
    assert first < page.index("a red fox in the snow") < second  # the 3-row cluster comes first
    assert page.index("0.800") < page.index("0.750")  # highest Jaccard first
    assert "a &lt;b&gt;bold&lt;/b&gt; castle &amp; moat" in page
    assert "<b>" not in page and "<script>" not in page  # every text escaped
    assert "<mark>deep</mark>" in page  # the word the kept text lacks is highlighted
    assert "3 clusters, 4 rows removed; showing the 2 largest" in page
    assert dedup_preview_html(clusters, kept, removed, n=2, title="dedup@x") == page


def test_dedup_preview_cli_writes_the_page_from_dedup_outputs(tmp_path):
    from scripts.lib.tables import write_parquet

    clusters, kept, removed = dedup_tables()
    data = tmp_path / "data"
    write_parquet(pd.concat([kept, removed], ignore_index=True), data / "clean" / "s1.parquet")
    write_parquet(kept, data / "dedup" / "s1.parquet")
    write_parquet(clusters, data / "dedup" / "s1.clusters.parquet")
    (tmp_path / "params.yaml").write_text("preview:\n  dedup_clusters: 1\n", encoding="utf-8")
    repo = Path(__file__).resolve().parents[1]

    def dedup_preview(source: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "scripts", "dedup-preview", source],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(repo)},
            capture_output=True,
            text=True,
        )

    result = dedup_preview("s1")
    assert result.returncode == 0, result.stderr
    page = (data / "dedup" / "s1.preview.html").read_text(encoding="utf-8")
    assert page.count('<table class="cluster"') == 1 and "a red fox in the <mark>deep</mark> snow" in page
    result = dedup_preview("nope")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "data/clean/nope.parquet: input not found" in result.stderr


# --- progress ------------------------------------------------------------------------------------


def test_progress_prints_one_summary_line_in_logs():
    log = io.StringIO()
    assert sum(track(range(1000), desc="clean@x", unit="prompts", stream=log)) == 499500
    lines = log.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("clean@x: 1,000 prompts in ") and lines[0].endswith(" prompts/s)")
    assert summary_line("release@v2", 1234, 0.8, "images") == "release@v2: 1,234 images in 0.8 s (1,542 images/s)"


def test_progress_on_a_terminal_draws_a_bar_with_rate_and_eta_then_the_summary():
    tty = io.StringIO()
    assert list(track(iter(range(50)), total=50, desc="dedup@x", stream=tty, force_terminal=True)) == list(range(50))
    out = tty.getvalue()
    assert "50/50" in out and "rows/s" in out and "ETA" in out and "\x1b[" in out
    assert re.search(r"dedup@x: 50 rows in \d+\.\d s \([\d,]+ rows/s\)$", out.rstrip().splitlines()[-1])


def failing_rows():
    yield from range(3)
    raise DataError("data/x.csv: row 4: bad row")


def check_row(i: int) -> None:
    if i == 4:
        raise DataError(f"data/x.csv: row {i}: bad row")


def test_progress_says_nothing_when_the_input_or_the_loop_body_fails():
    log = io.StringIO()
    with pytest.raises(DataError):
        list(track(failing_rows(), desc="x", stream=log))
    assert log.getvalue() == ""  # the error is the message
    with pytest.raises(DataError):
        for i in track(range(10), desc="y", stream=log):
            check_row(i)  # a stage's row check raising mid-loop: still one error line, no summary
    assert log.getvalue() == ""
