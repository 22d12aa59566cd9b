"""Round 32c: one command run reads one version of params.yaml, and plots read a clean report from the one
checked open (every row failed before its fix), on real files and links:

1. Each load_section read params.yaml again by name, so a stage loading several sections (summary: releases
   and sources for its plan, then dedup) mixed two versions of the file when it was renamed over, rewritten,
   replaced by a link to another params file or removed between two loads (`dvc exp run` beside it, an
   editor's save): summary wrote the threshold of the second file beside the releases of the first, or failed.
   The first read's text is now every later load's of that run (params.base.read_once); commands run one after
   another in one process each read the file they find.
2. plots checked a clean report by name (safe_paths.table_in), then read it by name (config_text): a link out
   of data/clean swapped in between was read as the source's report. It is now read from one open, checked
   there (safe_paths.read_within).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

import scripts.lib.params as params_module
import scripts.plots
from helpers.commands import cli
from helpers.workspace import error_line, write_params
from scripts.lib.errors import DataError

FIRST, SECOND = 0.71, 0.42  # dedup.threshold of the file read first, and of the one put in its place


def _workspace(root: Path) -> list[str]:
    """The repository's params (dedup.threshold FIRST) and a stats.json for each release; the release names."""
    write_params(root)
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    params["dedup"]["threshold"] = FIRST
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    params["dedup"]["threshold"] = SECOND
    (root / "other.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    for name in params["releases"]:
        (root / "rel" / name).mkdir(parents=True)
        (root / "rel" / name / "stats.json").write_text('{"rows": {"total": 3}}', encoding="utf-8")
    return list(params["releases"])


def renamed_over(root: Path) -> None:
    os.replace(root / "other.yaml", root / "params.yaml")


def rewritten_in_place(root: Path) -> None:
    (root / "params.yaml").write_text((root / "other.yaml").read_text(encoding="utf-8"), encoding="utf-8")


def link_to_another_put_in_place(root: Path) -> None:
    os.symlink("other.yaml", root / "params.link")
    os.replace(root / "params.link", root / "params.yaml")


def removed(root: Path) -> None:
    os.remove(root / "params.yaml")


def _after_first_params_read(monkeypatch, root: Path, change) -> None:
    """`change` runs once, right after the first read of params.yaml's text: between two loads of one run."""
    real, done = params_module.config_text, []

    def reading(path, *args, **kwargs):
        text = real(path, *args, **kwargs)
        if not done and Path(path).name == "params.yaml":
            done.append(True)
            change(root)
        return text

    monkeypatch.setattr(params_module, "config_text", reading)


@pytest.mark.parametrize("change", [renamed_over, rewritten_in_place, link_to_another_put_in_place, removed])
def test_summary_reads_one_version_of_params(tmp_path, monkeypatch, capfd, change):
    releases = _workspace(tmp_path)
    _after_first_params_read(monkeypatch, tmp_path, change)
    result = cli(["summary", "rel", "out.json"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))
    assert summary["dedup_threshold"] == FIRST  # the version its releases came from
    assert list(summary["rows"]) == releases


def test_each_command_run_reads_the_params_it_finds(tmp_path, monkeypatch, capfd):
    """The first read is one run's, not the process's: a file changed between two runs is read again."""
    _workspace(tmp_path)
    assert cli(["summary", "rel", "out.json"], tmp_path, monkeypatch, capfd).returncode == 0
    renamed_over(tmp_path)
    result = cli(["summary", "rel", "out.json"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))["dedup_threshold"] == SECOND


# ---------------------------------------------------------------- 2. plots' clean reports


REPORT = '{"dropped_by_reason": {"empty": 1}}'
ELSEWHERE = '{"dropped_by_reason": {"elsewhere": 99}}'


def link_out(clean: Path, outside: Path) -> None:
    os.symlink(outside / "r.json", clean / "swap")


def relative_link_up(clean: Path, outside: Path) -> None:
    os.symlink(os.path.relpath(outside / "r.json", clean), clean / "swap")


def link_to_a_link_inside_leading_out(clean: Path, outside: Path) -> None:
    os.symlink(outside / "r.json", clean / "hop.json")
    os.symlink("hop.json", clean / "swap")


@pytest.mark.parametrize("swap", [link_out, relative_link_up, link_to_a_link_inside_leading_out])
def test_plots_read_the_clean_report_they_checked(tmp_path, monkeypatch, swap):
    clean, outside = tmp_path / "clean", tmp_path / "outside"
    clean.mkdir()
    outside.mkdir()
    (clean / "s.report.json").write_text(REPORT, encoding="utf-8")
    (outside / "r.json").write_text(ELSEWHERE, encoding="utf-8")
    real = scripts.plots.table_in

    def checked_then_swapped(root, *names):
        path = real(root, *names)
        swap(clean, outside)
        os.replace(clean / "swap", clean / "s.report.json")
        return path

    monkeypatch.setattr(scripts.plots, "table_in", checked_then_swapped)
    with pytest.raises(DataError) as caught:
        scripts.plots.read_clean_reports(clean, ["s"])
    line = error_line(str(caught.value))
    assert "s.report.json" in line and "elsewhere" not in line, line
