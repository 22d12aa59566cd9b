"""Progress off a terminal (scripts/lib/progress.py): a CI log gets a line every few seconds with
done/total, rate and ETA, not silence until the end; then the one summary line."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time

from helpers import REPO, env
from scripts.lib.progress import duration, progress_line, track

LINE = re.compile(
    r"^(?P<desc>.+): (?P<done>[\d,]+)/(?P<total>[\d,]+) (?P<unit>\S+) \(\d+%\), .+, [\d,]+ \S+/s, ETA .+$"
)


def slow(items: int, pause: float):
    for i in range(items):
        time.sleep(pause)
        yield i


def test_a_log_gets_periodic_lines_with_done_total_rate_and_eta_then_the_summary():
    log = io.StringIO()
    assert sum(track(slow(6, 0.02), total=6, desc="generate@x", unit="images", stream=log, log_every=0.03)) == 15
    lines = log.getvalue().splitlines()
    periodic, summary = lines[:-1], lines[-1]
    assert 1 <= len(periodic) <= 5, lines
    for line in periodic:
        match = LINE.match(line)
        assert match and match["desc"] == "generate@x" and match["total"] == "6" and match["unit"] == "images", line
    assert [int(LINE.match(line)["done"]) for line in periodic] == sorted(
        {int(LINE.match(line)["done"]) for line in periodic}
    )
    assert summary.startswith("generate@x: 6 images in ")


def test_a_fast_loop_logs_only_its_summary_and_a_bar_never_logs_lines():
    log = io.StringIO()
    list(track(range(1000), desc="fast", stream=log))  # default interval: 30 s
    assert len(log.getvalue().splitlines()) == 1
    tty = io.StringIO()
    list(track(slow(3, 0.02), total=3, desc="bar", stream=tty, force_terminal=True, log_every=0.0))
    assert not LINE.search(tty.getvalue().replace("\r", "\n"))


def test_the_line_reads_at_a_glance():
    assert (
        progress_line("generate@d", 1200, 4800, 30.0, "images")
        == "generate@d: 1,200/4,800 images (25%), 30 s, 40 images/s, ETA 1 min 30 s"
    )
    assert progress_line("x", 5, None, 2.0) == "x: 5 rows, 2 s, 2 rows/s"  # no total: no ETA
    assert [duration(s) for s in (0.4, 59, 61, 3599, 7620)] == [
        "0 s",
        "59 s",
        "1 min 01 s",
        "59 min 59 s",
        "2 h 07 min",
    ]


def test_clean_text_off_a_terminal_logs_progress_lines(tmp_path):
    """clean-text over a 1.1 MB file (two batches) with stderr to a pipe: lines while it runs, then the summary."""
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "in.txt").write_text("a red fox in the snow, oil painting\n" * 30_000, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "scripts", "clean-text", "in.txt", "out.jsonl"],
        cwd=tmp_path,
        env={**env(), "PYTHONPATH": str(REPO), "T2I_PROGRESS_EVERY_S": "0"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert any(LINE.match(line) and line.startswith("clean-text in.txt: ") and " bytes " in line for line in lines), (
        lines
    )
    assert re.match(r"clean-text in\.txt: 1,080,000 bytes in [\d.]+ s", lines[-1]), lines
