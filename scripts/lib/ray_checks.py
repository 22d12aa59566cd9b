"""The checks of `runtime.ray_address` before and while Ray is asked to join it: each says why no Ray is there
in words of ours, in bounded time (Ray's own searches and retries took 5 s to minutes), or None.

ray_engine calls them; `auto_refusal` and `refusal` run before Ray is imported (seconds on a loaded machine).
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import re
import socket
import sys
import time
from collections.abc import Iterator, Mapping

import psutil

# `user:password@` before a host, with or without a scheme: Ray's own message quotes the address too
USERINFO = re.compile(r"(?:(?<=://)|(?<![\w.:/@-]))[^\s/@'\"]+@")


def cannot_join(address: str | None, why: str) -> str:
    shown_address = None if address is None else USERINFO.sub("***@", address)
    return f"runtime.ray_address={shown_address!r}: cannot start or join Ray ({USERINFO.sub('***@', why)})"


def reason(exc: Exception) -> str:
    return next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def refusal(address: str) -> str | None:
    """Why `address` (host:port, or ray://) surely has no Ray: ray:// without Ray Client's grpc, a host name that
    cannot resolve, a port that refuses connections. Anything else (a timeout, a server that accepts but is not
    Ray, "auto") is left to Ray's own client (gcs_silence)."""
    place = _probed_place(address)
    host, _, port = place.rpartition(":")
    failure = connection_failure(place, 1) if host and port.isdigit() else None
    if isinstance(failure, ConnectionRefusedError):
        return "nothing listens there: connection refused"
    if unresolvable(failure):
        # Ray's client waited the whole connect_timeout_s, then blamed a GCS that did not answer
        return f"the host name {host!r} does not resolve"
    if address.startswith("ray://") and importlib.util.find_spec("grpc") is None:
        # Ray's import and 5-8 s first, then its own words on `ray[client]`
        return "ray:// joins through Ray Client, which needs the grpc package: pip install 'ray[client]'"
    return None


def unresolvable(failure: Exception | None) -> bool:
    """`failure` (connection_failure's) says the host name has no address: no such name (a DNS server that did not
    answer is left to Ray's bounded wait), or none that can be (an empty label, or one over 63 characters)."""
    if isinstance(failure, socket.gaierror):
        return failure.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME))
    return isinstance(failure, UnicodeError)


def connection_failure(place: str, seconds: float) -> Exception | None:
    """None when `place` (host:port, an IPv6 host in brackets or not) takes a TCP connection within `seconds`,
    else why not (ConnectionRefusedError: nothing listens). The one probe of refusal and ClusterWatch."""
    host, _, port = place.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=seconds).close()
    except (OSError, ValueError, OverflowError) as exc:
        return exc
    return None


# Ray's GCS client (as `ray health-check` uses it) asked for at most 1 s at a time: by Ray's defaults its call
# first waits 5 s for the channel and 5 s for the pubsub one, and ray.init tries 20 times, all in C++ that a
# Ctrl-C cannot interrupt (minutes, a Ctrl-C acting after up to 40 s)
GCS_ASK_SECONDS = 1
GCS_PAUSE_SECONDS = 0.5
GCS_BOUNDS = {"RAY_gcs_rpc_server_connect_timeout_s": "0", "RAY_py_gcs_connect_timeout_s": str(GCS_ASK_SECONDS)}


def gcs_silence(address: str, seconds: int) -> str | None:
    """Why Ray's GCS at `address` did not answer within `seconds` (nothing there, or not Ray); None once it
    answers, and ray.init then joins it by Ray's own defaults. "auto" and ray:// are left to ray.init."""
    from ray._private.services import canonicalize_bootstrap_address
    from ray._raylet import GcsClient  # type: ignore[attr-defined]  # compiled: not in _raylet.pyi

    if address.startswith("ray://"):
        return None
    try:
        gcs_address = canonicalize_bootstrap_address(address)
    except Exception:
        return None  # ray.init says why in its own words
    if gcs_address is None:  # "local": ray.init starts one
        return None
    deadline = time.monotonic() + seconds
    with ray_config(GCS_BOUNDS):
        while True:
            try:
                GcsClient(address=gcs_address)
                return None
            except Exception as exc:
                if time.monotonic() + GCS_PAUSE_SECONDS + GCS_ASK_SECONDS > deadline:
                    return f"no Ray answered there within {seconds} s: {reason(exc)}"
            time.sleep(GCS_PAUSE_SECONDS)


@contextlib.contextmanager
def ray_config(settings: dict[str, str]) -> Iterator[None]:
    """Ray's C++ config with `settings` (RAY_* variables) for the block. Ray read the environment once, at
    import: it is read again on the way in and out (as Ray's own token setup does)."""
    from ray._raylet import Config  # type: ignore[attr-defined]  # compiled: not in _raylet.pyi

    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        Config.initialize("")
        yield
    finally:
        restore_environment(saved)
        Config.initialize("")


def restore_environment(saved: dict[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


# where `ray start` writes the address "auto" joins (Ray's get_default_ray_temp_dir: RAY_TMPDIR, else TMPDIR, else
# /tmp, then ray/), and the process every Ray cluster's head runs (the name Ray's own search looks for)
ADDRESS_FILE = "ray_current_cluster"
GCS_PROCESS = "gcs_server"


def address_file(environ: Mapping[str, str]) -> str:
    """The file Ray reads for "auto" under `environ`."""
    base = environ.get("RAY_TMPDIR") or (environ.get("TMPDIR") if sys.platform.startswith("linux") else None) or "/tmp"
    return os.path.join(base, "ray", ADDRESS_FILE)


def auto_refusal(environ: Mapping[str, str], gcs_running: bool | None = None) -> str | None:
    """Why `ray_address: auto` surely finds no cluster, known before Ray is imported: RAY_ADDRESS unset (or set to
    a port that refuses), no address file of `ray start`'s, no GCS process on this machine. Ray's own search took
    its import and a ConnectionError (5-15 s) to say so. `gcs_running` None: looked up here."""
    if named := environ.get("RAY_ADDRESS"):  # Ray's "auto" joins it: a GCS, or a client server (ray://)
        found = refusal(named)
        return None if found is None else f"RAY_ADDRESS names {USERINFO.sub('***@', named)}: {found}"
    file = address_file(environ)
    with contextlib.suppress(OSError, UnicodeDecodeError):
        with open(file, encoding="utf-8") as opened:
            written = opened.read().strip()
        if written:
            return None  # the last `ray start`'s address: Ray's client is bounded by connect_timeout_s
    if gcs_running is None:
        gcs_running = any_gcs_process()
    if gcs_running:
        return None  # Ray's "auto" joins a GCS it finds among this machine's processes
    return f"no Ray cluster runs here: RAY_ADDRESS is unset, no {file} (ray start writes it), no {GCS_PROCESS} process"


RAY_CLIENT_PORT = 10001  # ray://host without a port


def _probed_place(address: str) -> str:
    """host:port that `address` (host:port, or ray://[user:password@]host[:port]) connects to first."""
    if not address.startswith("ray://"):
        return address
    place = address.removeprefix("ray://").rpartition("@")[2].partition("/")[0]
    return place if place.rpartition(":")[2].isdigit() else f"{place}:{RAY_CLIENT_PORT}"


def any_gcs_process() -> bool:
    names = (process.info.get("name") or "" for process in psutil.process_iter(["name"]))
    return any(name.startswith(GCS_PROCESS) for name in names)


def ray_workers(requested: int, cluster_cpus: float) -> int:
    """`runtime.workers` on Ray: 0 is one per CPU the cluster has now; a number is taken as asked, above the
    cluster's CPUs too: an autoscaling cluster (KubeRay, Anyscale) starts the nodes Ray Data's actor pool asks for,
    and capping it at the CPUs of the moment would pin a 1B-prompt run to the head's few (docs/scale.md)."""
    return requested if requested > 0 else max(1, int(cluster_cpus))


# a block of fewer rows costs Ray more (a task, its objects, a shuffle's N x M pieces) than its rows cost the stage:
# `partitions: 1000000` cut 200 rows into 200 one-row blocks and a dedup's five shuffles into 200 x 200 pieces each.
# Up to MANY_BLOCKS (or 2 per worker) any count is as asked: tests and small runs ask 7 or 64 to cross blocks
MIN_BLOCK_ROWS, MANY_BLOCKS = 1_000, 64


def bounded_blocks(asked: int, rows: int, workers: int) -> int:
    """Blocks (or a shuffle's groups) for `rows` rows where `asked` are (runtime.partitions, or the default's): at
    most one per row, and over MANY_BLOCKS (or 2 per worker) only while each still holds MIN_BLOCK_ROWS rows. The
    run's tasks are then bounded by the rows, not by the param (as a Spark engineer's coalesced partitions)."""
    most = max(MANY_BLOCKS, 2 * workers, math.ceil(rows / MIN_BLOCK_ROWS))
    return max(1, min(asked, most, rows))


def blocks_note(param: str, rows: int, asked: int, used: int) -> str | None:
    """The line that says `param` (`partitions=1000000`) asked for more blocks than bounded_blocks gave (None: as
    asked)."""
    if used >= asked:
        return None
    return (
        f"runtime.{param} asks {asked} blocks for {rows} rows: {used} on Ray "
        f"(at most one per row, and over {MANY_BLOCKS} or 2 per worker only with {MIN_BLOCK_ROWS:,} rows each)"
    )
