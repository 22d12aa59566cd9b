"""An integer past Python's 4,300-digit conversion limit in a JSON file of ours (a release's stats.json, a clean
report) was refused with Python's own words, `Exceeds the limit (4300 digits) for integer string conversion ...;
use sys.set_int_max_str_digits() to increase the limit`: advice to a programmer, in a user's line (found by round
40a). nesting.loads_json now says what the file holds, in one line naming it."""

from __future__ import annotations

import pytest
from test_round40a import _workspace

from helpers.commands import cli
from helpers.workspace import error_line
from scripts.lib.nesting import loads_json

LONG_NUMBERS = {  # case: a JSON text whose one integer is past the limit
    "4,301 digits": "1" * 4301,
    "a negative 5,000 digits": "-" + "7" * 5000,
    "nested in a count": '{"rows": {"total": ' + "9" * 6000 + "}}",
}


@pytest.mark.parametrize("case", LONG_NUMBERS)
def test_loads_json_names_the_long_integer_in_its_own_words(case):
    with pytest.raises(ValueError) as raised:
        loads_json(LONG_NUMBERS[case])
    assert str(raised.value) == "an integer of more than 4,300 digits"


def test_an_integer_of_4300_digits_is_still_read():  # guard: the limit itself is Python's, unchanged
    assert loads_json("[" + "1" * 4300 + "]")[0] == int("1" * 4300)


STATS = {  # case: stats.json of release r2
    "the total": '{"rows": {"total": ' + "9" * 4400 + "}}",
    "a negative total": '{"rows": {"total": -' + "9" * 4400 + "}}",
    "a field beside": '{"rows": {"total": 6}, "kept": ' + "1" * 9000 + "}",
}


@pytest.mark.parametrize("case", STATS)
def test_summary_names_a_long_integer_without_pythons_advice(tmp_path, monkeypatch, capfd, case):
    _workspace(tmp_path)
    (tmp_path / "data" / "releases" / "r2" / "stats.json").write_text(STATS[case], encoding="utf-8")
    done = cli(["summary", "data/releases", "summary.json"], tmp_path, monkeypatch, capfd)
    line = error_line(done.stderr)
    assert done.returncode == 2 and "data/releases/r2/stats.json" in line, done.stderr
    assert "an integer of more than 4,300 digits" in line and "set_int_max_str_digits" not in line, line
    assert not (tmp_path / "summary.json").exists()
