"""SOURCE_DATE_EPOCH, the date a reproducible build records (https://reproducible-builds.org/specs/source-date-epoch/):
a bucketed export's manifest.json `created`.

The spec's value is whole seconds since 1970-01-01 UTC in ASCII digits, and a malformed one SHOULD fail the
build. It was read with str.isdigit and int(): a second past year 9999 (ValueError) or past the platform's
time_t (OverflowError), or a digit isdigit takes and int() does not ('²'), was a traceback at the end of a
release; Arabic-Indic digits were read as a date, a fraction dropped silently. Read here, once, before a
shard is written: unset or empty is no date, any other value not the spec's is one line naming the variable
(never its value: an environment may hold secrets).
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime

from scripts.lib.errors import DataError

NAME = "SOURCE_DATE_EPOCH"
LAST_SECOND = 253402300799  # 9999-12-31T23:59:59Z: the last second a datetime holds
_SECONDS = re.compile(r"[0-9]{1,12}")  # ASCII only (re's [0-9] is; \d and str.isdigit take any script's digits)


def created() -> str | None:
    """The ISO 8601 UTC date SOURCE_DATE_EPOCH names, None when unset or empty; DataError for any other value."""
    value = os.environ.get(NAME, "")
    if not value:
        return None
    if not _SECONDS.fullmatch(value) or int(value) > LAST_SECOND:
        raise DataError(
            f"{NAME}: must be whole seconds since 1970-01-01 UTC in ASCII digits, at most {LAST_SECOND} "
            "(9999-12-31), as `date +%s` prints it; fix or unset it"
        )
    return datetime.fromtimestamp(int(value), UTC).isoformat()
