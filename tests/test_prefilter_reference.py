"""prefilter@S reads a reference release's rows from data/dedup/X.parquet (prefilter.text_loader): that read
opened the name as it found it, so a table linked out of data/dedup was read as X's rows, where every other
table read of a stage is one checked open in its folder (safe_paths.table_in). Each row failed before (read at
exit 0); now one line naming the table.
"""

from __future__ import annotations

import os

import pandas as pd
import pytest

from scripts.lib.errors import DataError
from scripts.lib.params import Split
from scripts.prefilter import text_loader

ROWS = pd.DataFrame(
    {"id": ["a1", "a2"], "text": ["a red fox", "a blue whale"], "prompt": ["a red fox", "a blue whale"]}
)


def link_absolute(root):
    os.symlink(root / "outside/a.parquet", root / "data/dedup/a.parquet")


def link_relative(root):
    os.symlink("../../outside/a.parquet", root / "data/dedup/a.parquet")


def link_through_a_link_inside(root):
    os.symlink(root / "outside/a.parquet", root / "data/dedup/hop.parquet")
    os.symlink("hop.parquet", root / "data/dedup/a.parquet")


@pytest.mark.parametrize("plant", [link_absolute, link_relative, link_through_a_link_inside])
def test_a_reference_table_linked_out_of_data_dedup_is_refused(tmp_path, plant):
    (tmp_path / "data/dedup").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    ROWS.to_parquet(tmp_path / "outside/a.parquet")
    plant(tmp_path)
    with pytest.raises(DataError, match=r"data/dedup/a\.parquet: a link on its way leads out of .*data/dedup"):
        text_loader(tmp_path / "data/dedup", Split(), {})("a", "train")


def test_a_reference_table_in_data_dedup_is_read(tmp_path):
    (tmp_path / "data/dedup").mkdir(parents=True)
    ROWS.to_parquet(tmp_path / "data/dedup/a.parquet")
    split = Split(method="hash", validation_fraction=0.0, seed=1)
    assert set(text_loader(tmp_path / "data/dedup", split, {})("a", "train")["text"]) == set(ROWS["text"])
