"""Round 40d: hostile inputs against `ingest`, each source kind (params.yaml sources, docs/contracts.md §5).

1. A parquet source whose footer's row counts disagree with its pages (a truncated copy, a hand-patched or
   badly written footer) was read as pyarrow reads it, as many rows as each row group's entry says: a footer
   claiming 10^12 rows of a 3-row file wrote 3 rows, one whose row group claims 1 row wrote 1 of its 3, both at
   exit 0 with nothing in the report. iter_parquet now counts the rows it reads against the footer's row count
   and the first column's stored values: one line naming the file, exit 2, no table written.

What held (probed, no change): a parquet of 10^5 row groups (12 s, 290 MB); a prompt column typed list<string>,
struct or binary (one line), large_string or dictionary (read); a CSV with one 200 MB field, a repeated header
name, UTF-16 with its mark (one line each); a text source with CR-only line ends, a 0-byte file, 10^6 empty
lines (counted blank_line); a shard of 10^5 members, a `..` member, a hard link, a GNU sparse member (counted).
"""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.workspace import error_line, ingest_source, leftovers

GUSTAVOSTA = {"kind": "gustavosta", "on_error": "fail"}
I64_THREE = b"\x16\x06"  # a thrift compact i64 field (delta 1) holding 3, zigzag encoded: the counts of a 3-row file


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def patched_parquet(claim: int, which: str) -> tuple[bytes, int, int]:
    """A 3-row parquet (column Prompt) whose footer's count(s) of 3 say `claim`: the file's row count ("file"), its
    row group's ("group"), or every count ("all"); with the row counts pyarrow then reads from its footer."""
    sink = io.BytesIO()
    pq.write_table(pa.table({"Prompt": ["a", "b", "c"]}), sink)
    data = sink.getvalue()
    size = int.from_bytes(data[-8:-4], "little")
    footer = data[-8 - size : -8]
    spots = [i for i in range(len(footer) - 1) if footer[i : i + 2] == I64_THREE]
    chosen = {"file": spots[:1], "group": spots[-1:], "all": spots}[which]
    for spot in reversed(chosen):
        footer = footer[: spot + 1] + varint(2 * claim) + footer[spot + 2 :]
    patched = data[: -8 - size] + footer + len(footer).to_bytes(4, "little") + b"PAR1"
    meta = pq.read_metadata(io.BytesIO(patched))
    return patched, meta.num_rows, meta.row_group(0).num_rows


FOOTERS = {  # case: (the claimed count, which count says it, (file rows, row group rows) pyarrow reads)
    "the file claims 10^12 rows": (10**12, "file", (10**12, 3)),
    "the file claims 1 row": (1, "file", (1, 3)),
    "its row group claims 1 row": (1, "group", (3, 1)),
    "every count claims 10^12": (10**12, "all", (10**12, 10**12)),
}


@pytest.mark.parametrize("case", FOOTERS)
def test_a_parquet_footer_that_miscounts_its_rows_is_one_line(tmp_path, monkeypatch, capfd, case):
    claim, which, counts = FOOTERS[case]
    data, file_rows, group_rows = patched_parquet(claim, which)
    assert (file_rows, group_rows) == counts  # the footer says what the case says
    result, rows = ingest_source(tmp_path, monkeypatch, capfd, GUSTAVOSTA, {"data/train.parquet": data})
    assert result.returncode == 2, (result.stdout, result.stderr[-2000:])
    line = error_line(result.stderr)
    assert "train.parquet" in line and "truncated or corrupt parquet file" in line
    assert rows is None and not leftovers(tmp_path)
