"""summary: data/summary.json is the pipeline's one metrics file, so the README's `dvc exp show` fits a 160-column
terminal with the dedup threshold and each release's rows readable."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import yaml

from helpers import REPO, env
from scripts.summary import read_stats, summarise


def test_the_summary_is_the_threshold_and_each_releases_rows(tmp_path):
    for name, total in (("v2", 700), ("v4-b", 711)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "stats.json").write_text(json.dumps({"rows": {"total": total, "train": 1}, "removed": {}}))
    assert summarise(0.7, read_stats(tmp_path, ["v2", "v4-b"])) == {
        "dedup_threshold": 0.7,
        "rows": {"v2": 700, "v4-b": 711},
    }


def test_summary_json_is_the_only_metrics_file():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    metrics = [m for stage in stages.values() for m in stage.get("do", stage).get("metrics", [])]
    assert metrics == [{"data/summary.json": {"cache": False}}]
    outs = [o for stage in stages.values() for o in stage.get("do", stage).get("outs", [])]
    assert {"data/releases/${key}/stats.json": {"cache": False}} in outs  # still written and committed


def readme_exp_show() -> list[str]:
    """The README's `dvc exp show` line (its Everyday commands), as argv."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    line = next(line for line in text.splitlines() if line.startswith("dvc exp show"))
    return shlex.split(line.split("  #")[0])


def test_dvc_exp_show_fits_160_columns_with_threshold_and_rows(built_repo, tmp_path):
    """The README's `dvc exp show` fits a 160-column terminal, the threshold and every release's rows visible."""
    result = subprocess.run(
        [sys.executable, "-m", *readme_exp_show(), "--no-pager"],
        cwd=built_repo,
        env={**env(), "COLUMNS": "160"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    shown = result.stdout
    lines = shown.splitlines()
    assert max(map(len, lines)) <= 160, shown
    summary = json.loads((built_repo / "data/summary.json").read_text())
    header = next(line for line in lines if "Experiment" in line)
    for column in ["dedup_threshold", *(f"rows.{r}" for r in summary["rows"])]:
        assert column in header, (column, header)
    workspace = next(line for line in lines if re.match(r"\s*workspace\b", line))
    for total in summary["rows"].values():
        assert re.search(rf"\b{total}\b", workspace), (total, workspace)
