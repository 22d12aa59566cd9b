"""Round 31f: compose under resource limits. pyarrow's OSError text (`Error writing bytes to file. Detail: [errno
27] File too large`, `Failed to open local file '<output>/.rows.parquet.tmp-spill/...'. Detail: [errno 24] ...`)
was the error line as it was, naming a temp path; io.atomic_path now tells its errno as the OS does. Each row
failed before the fix (the line held "Detail:"); the old output stays byte for byte and no temp is left.
"""

from __future__ import annotations

import pandas as pd
import pytest

from helpers.workspace import error_line, leftovers, make_splits, snapshot, write_params
from helpers.workspace import run_scripts as run
from scripts.lib.tables import write_parquet

ARGV = ["compose", "r", "data/splits", "data/compose/r"]


def compose_ws(root, previous: bool) -> None:
    components = [{"source": "diffusiondb", "split": s, "into": s} for s in ("train", "validation")]
    write_params(root, releases={"r": {"components": components, "export": "imagefolder"}})
    make_splits(root, n=8)
    if previous:
        assert run(root, *ARGV).returncode == 0
        for split in ("train", "validation"):  # new rows: the next run writes other bytes
            path = root / "data/splits/diffusiondb" / f"{split}.parquet"
            rows = pd.read_parquet(path)
            write_parquet(rows.assign(text=rows["text"] + " changed"), path)


ROWS = [  # (a previous output, the file-size limit, the reason told); a previous output: 3 runs, 6 s
    pytest.param(False, 500, "File too large", id="full disk, first run"),
    pytest.param(True, 3000, "File too large", id="full disk, over a previous output", marks=pytest.mark.slow),
    pytest.param(True, 4000, "File too large", id="full disk, at the spill's end", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("previous, limit, reason", ROWS)
def test_compose_on_a_full_disk_names_its_output_in_the_oss_words(tmp_path, previous, limit, reason):
    compose_ws(tmp_path, previous)
    before = snapshot(tmp_path)
    done = run(tmp_path, *ARGV, limit=limit)
    line = error_line(done.stderr)
    assert done.returncode == 2 and line == f"error: data/compose/r/rows.parquet: cannot write ({reason})", line
    assert snapshot(tmp_path) == before
    assert leftovers(tmp_path) == []
