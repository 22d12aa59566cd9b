"""Round 34d: the JSON that round 32a's loads_json refuses (NaN, Infinity, 1e999, a lone surrogate), at the callers
of scripts/plots.py, summary.py and captions.py.

1. captions@S wrote each row's `generation` with json.dumps: a generate manifest whose guidance (or steps) was
   inf, -inf or NaN (a null too: NaN once in pandas) became `{"guidance": Infinity, ...}` at exit 0, a value
   release's card then refused as not JSON, far from its cause. It is written with nesting.dumps_json: one line
   naming the manifest and the row's id, exit 2, no output.
2. plots' clean reports and summary's stats.json, read with loads_json, said only "not valid JSON" and "not a
   release's stats.json (no rows.total)" for a NaN, an overflowing number or a lone surrogate (the second one
   wrong: rows.total was there). The one line now says what loads_json found.
3. captions@S takes each row's width and height from the manifest, unchecked: a manifest without them was a
   KeyError internal error (exit 1), a width of 2.5 or inf a TypeError. They are checked as the input's are.

Callers that already held (one line naming the file, or a counted "unreadable"/None): tag, history_table,
rule_sets, card, parquet_sources, dvc_cache, plot_points.
"""

from __future__ import annotations

import math

import pytest

from helpers.workspace import captions_error_line
from scripts.lib.errors import DataError

# ---------------------------------------------------------------- 1. captions' generation JSON


MANIFEST_VALUES = {  # case: (the manifest column, the second row's value, what the one line says)
    "guidance inf": ("guidance", math.inf, "not JSON compliant"),
    "guidance -inf": ("guidance", -math.inf, "not JSON compliant"),
    "guidance NaN": ("guidance", math.nan, "not JSON compliant"),
    "guidance null": ("guidance", None, "not JSON compliant"),
    "steps NaN (a float column)": ("steps", math.nan, "not JSON compliant"),
}


def _manifest(**columns) -> dict:
    manifest = {"id": ["a", "b"], "file": ["a.png", "b.png"], "width": [8, 8], "height": [8, 8], "model": ["m", "m"]}
    return manifest | {"guidance": [7.5, 7.5], "steps": [1, 1], "seed": [1, 2]} | columns


@pytest.mark.parametrize("case", MANIFEST_VALUES)
def test_captions_refuses_a_generation_value_json_has_no_word_for(tmp_path, monkeypatch, capfd, case):
    column, value, said = MANIFEST_VALUES[case]
    line = captions_error_line(tmp_path, monkeypatch, capfd, _manifest(**{column: [_manifest()[column][0], value]}))
    assert "images/manifest.parquet: id b" in line and said in line, line


MANIFEST_SIZES = {  # case: (the manifest's width column, or None for none, what the one line says)
    "no width column": (None, "no 'width' column"),
    "a width of 2.5": ([8.0, 2.5], "row 2"),
    "a width of inf": ([8.0, math.inf], "row 2"),
    "a width of -8": ([8, -8], "row 2"),
}


@pytest.mark.parametrize("case", MANIFEST_SIZES)
def test_captions_checks_the_sizes_a_manifest_gives_its_rows(tmp_path, monkeypatch, capfd, case):
    widths, said = MANIFEST_SIZES[case]
    manifest = _manifest(width=widths)
    if widths is None:
        del manifest["width"]
    line = captions_error_line(tmp_path, monkeypatch, capfd, manifest)
    assert "images/manifest.parquet" in line and said in line, line


# ---------------------------------------------------------------- 2. the reason, said by plots and summary

NOT_JSON = {  # case: (the file's bytes, what loads_json found, as the one line says it)
    "NaN": (b'{"rows": {"total": NaN}, "dropped_by_reason": {}}', "NaN is not a JSON number"),
    "-Infinity": (b'{"rows": {"total": -Infinity}, "dropped_by_reason": {}}', "Infinity is not a JSON number"),
    "1e999": (b'{"rows": {"total": 1e999}, "dropped_by_reason": {}}', "1e999 is too large for a float"),
    "a lone surrogate": (b'{"rows": {"total": 1}, "dropped_by_reason": {"\\ud800": 1}}', "lone surrogate"),
}


@pytest.mark.parametrize("case", NOT_JSON)
def test_plots_says_why_a_clean_report_is_not_json(tmp_path, case):
    from scripts.plots import read_clean_reports

    data, said = NOT_JSON[case]
    (tmp_path / "s.report.json").write_bytes(data)
    with pytest.raises(DataError) as caught:
        read_clean_reports(tmp_path, ["s"])
    line = str(caught.value)
    assert "\n" not in line and "s.report.json: not valid JSON" in line and said in line, line


@pytest.mark.parametrize("case", NOT_JSON)
def test_summary_says_why_a_stats_file_is_not_json(tmp_path, case):
    from scripts.summary import read_stats

    data, said = NOT_JSON[case]
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "stats.json").write_bytes(data)
    with pytest.raises(DataError) as caught:
        read_stats(tmp_path, ["v1"])
    line = str(caught.value)
    assert "\n" not in line and "v1/stats.json" in line and said in line and "no rows.total" not in line, line
