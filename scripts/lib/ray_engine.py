"""Ray for the stages that run on `runtime.engine: ray`: one session per command, shut down on any exit.

The stages hand Ray Data the same batch functions the local engine calls; this module only starts and
stops Ray and turns its failures into one-line DataErrors.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import re
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Collection, Iterator
from pathlib import Path
from types import FrameType, ModuleType

import psutil

from scripts.lib.errors import DataError, exception_line, shown, shown_short
from scripts.lib.interrupts import STOPPING_SIGNALS, Interrupted, note, stop_if_received
from scripts.lib.key_redaction import PROXY_VARIABLES
from scripts.lib.params import Runtime
from scripts.lib.ray_checks import (
    USERINFO,
    auto_refusal,
    cannot_join,
    connection_failure,
    gcs_silence,
    reason,
    refusal,
    restore_environment,
)
from scripts.lib.ray_workers import RedactedLines, checked_line, driver_reads, own_folder, remove_folder, worker_setup
from scripts.lib.ray_workers import remove_stale_folders as remove_stale_folders  # its callers import it from here

REPO_ROOT = Path(__file__).resolve().parents[2]
# Ray Data's groupby on its classic sort-based shuffle: Ray 2.60's default (SHUFFLE_V2, hash aggregator
# actors) took 3-6x longer for dedup's groupbys on 2 CPUs, and its HASH_SHUFFLE made no progress at all there
SHUFFLE = "sort_shuffle_pull_based"
# an actor pool's bounds (map_batches' Ray options): Ray Data restarts a lost actor, and retries its task, without
# a limit by default, so a run whose actors kept dying (killed on every try, a machine out of memory) never ended;
# this many restarts and retries each, then the run is one line
ACTOR_RETRIES = {"max_restarts": 3, "max_task_retries": 3}
LOCAL = (None, "local")  # runtime.ray_address values that start a Ray of the run's own


def map_on_actors(dataset, fn, **options):
    """`dataset.map_batches(fn, **options)` on an actor pool bounded by ACTOR_RETRIES. Ray 2.60 takes them only
    as `ray_remote_args` (no named parameter yet), whose deprecation warning it printed beside the stage's lines."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        return dataset.map_batches(fn, **options, **ACTOR_RETRIES)


@contextlib.contextmanager
def ray_session(runtime: Runtime, workers_need: Collection[str] = ()) -> Iterator[ModuleType]:
    """`ray`, initialised for `runtime` (a local instance, or the cluster at `ray_address`), shut down on
    the way out, a Ctrl-C included, when this call started it. A local instance's processes get no secret of
    the environment but the variables `workers_need` names (withheld_variables), and write their logs into a
    folder of this session's, removed with it."""
    address = runtime.ray_address
    # nothing listens there, or no cluster runs for "auto": no need to import and ask Ray
    if address is not None and (why := auto_refusal(os.environ) if address == "auto" else refusal(address)):
        raise DataError(cannot_join(address, why))
    try:
        import ray
    except ImportError:
        raise DataError("runtime.engine=ray but ray is not installed (pip install 'ray[data]')") from None
    _quiet_console()
    started_here = not ray.is_initialized()
    saved = {"RAY_ADDRESS": os.environ.get("RAY_ADDRESS")}
    logs = None  # a local Ray's session folder (its logs, sockets, spilled objects)
    if started_here and address in LOCAL:
        # params are the only source: ray.init, and what it starts, read RAY_ADDRESS (an "auto" joins the cluster
        # it names); a stray one has no say over the local Ray that `ray_address: null` asks for
        os.environ.pop("RAY_ADDRESS", None)
        logs = own_folder(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir())
    children_before: set[int] = set()
    if started_here:
        children_before = {child.pid for child in psutil.Process().children(recursive=True)}
        _adopt_orphans()
        handlers = {signum: signal.getsignal(signum) for signum in STOPPING_SIGNALS}
        try:
            with _local_environment(withheld_variables(workers_need), logs) if logs else contextlib.nullcontext():
                _start_or_join(ray, runtime, children_before)
        except BaseException:
            restore_environment(saved)
            remove_folder(logs)
            raise
        finally:
            _keep_handlers(handlers)
    context = ray.data.DataContext.get_current()
    strategy = context.shuffle_strategy
    context.shuffle_strategy = type(strategy)(SHUFFLE)
    watch = None
    try:
        # a Ctrl-C while ray.init ran raised Interrupted inside Ray's own code, which may catch it (a loaded
        # start went on to exit 0 with its outputs written): the signal, noted, stops the run here
        stop_if_received()
        # after the signal's check: an init a signal cut short has no node to probe (it was an AttributeError)
        watch = ClusterWatch(address, _probed(ray), runtime.connect_timeout_s, True) if started_here else None
        with watch or contextlib.nullcontext():
            yield ray
    finally:
        context.shuffle_strategy = strategy
        if started_here:
            try:
                _shutdown_to_the_end(ray, lost=watch is not None and watch.lost is not None)
            finally:
                _reap(children_before)
                restore_environment(saved)
                remove_folder(logs)


# a cluster gone mid-run (its head or this machine's raylet stopped): Ray's driver waited for its GCS 60 s
# (gcs_rpc_server_reconnect_timeout_s), then ended the process from C++ at exit 1 with Ray's lines and the outputs'
# temps left. A thread of ours probes both every second; one silent `connect_timeout_s` (at most WATCH_MOST_S) is
# the one line, raised in the main thread through LOST_SIGNAL: the stage's DataError path removes its temps
WATCH_EVERY_S, WATCH_MOST_S, LOST_SIGNAL, LOST_GRACE_S = 1.0, 30, signal.SIGUSR2, 5


class ClusterWatch:
    """A run on Ray: `lost` (its one line) once a place of `places` (name: host:port) has not answered for `seconds`,
    raised in the main thread as a DataError (and again on the way out, whatever Ray made of it)."""

    def __init__(self, address: str | None, places: dict[str, str], seconds: int, quiet_ray: bool = False):
        self.address, self.places, self.seconds = address, places, min(seconds, WATCH_MOST_S)
        self.quiet_ray, self._python_only = quiet_ray, 2  # the command's own process: see _quiet
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="ray-cluster-watch", daemon=True)

    def __enter__(self) -> ClusterWatch:
        self._armed, self._handler = True, signal.signal(LOST_SIGNAL, self._raise_lost)
        self._thread.start()
        return self

    def __exit__(self, kind, exc, traceback) -> None:
        self._armed = False  # a signal sent just now finds the handler inert
        self._stop.set()
        self._thread.join()
        signal.signal(LOST_SIGNAL, self._handler)
        if self.lost is not None and kind is not None and issubclass(kind, Exception):
            raise DataError(self.lost) from None  # whatever Ray made of it (its own error, a wrapped one)

    def _raise_lost(self, signum: int, frame: FrameType | None) -> None:
        if self.lost is not None:  # the watch's own signal; inert once the watch is closing
            if self._armed:
                raise DataError(self.lost)
            return
        if callable(self._handler):  # someone's `kill -USR2`: a stop like any other (interrupts.STOPPING_SIGNALS)
            self._handler(signum, frame)

    def _watch(self) -> None:
        silent_since: dict[str, float] = {}
        while self.lost is None and not self._stop.is_set():
            for name, place in self.places.items():
                if connection_failure(place, WATCH_EVERY_S) is None:
                    silent_since.pop(name, None)
                elif time.monotonic() - silent_since.setdefault(name, time.monotonic()) >= self.seconds:
                    self.lost = self.lost or cluster_lost(self.address, name, place, self.seconds)
            if silent_since:
                self._quiet()
            self._stop.wait(0 if self.lost else WATCH_EVERY_S)
        if self.lost is not None:
            self._stop_the_run()

    def _quiet(self) -> None:
        """A place is silent: Ray's C++ threads write lines to descriptor 2 now (`Failed to push error to driver`),
        so it goes nowhere for the rest of the run; the command's own lines go to a copy of it."""
        if self.quiet_ray and self._python_only == 2:
            sys.stderr.flush()
            self._python_only = os.dup(2)
            with open(os.devnull, "wb") as sink:
                os.dup2(sink.fileno(), 2)
            copy = open(self._python_only, "w", encoding="utf-8", errors="backslashreplace")  # noqa: SIM115
            sys.stderr = RedactedLines(copy)  # the command's lines stay redacted (a bare copy showed secrets)

    def _stop_the_run(self) -> None:
        """The line raised in the main thread; where Ray holds it LOST_GRACE_S (a C++ wait that runs no handler), said
        from here, redacted as every line of the command (checked_line), and the process ended at exit 2 (the
        outputs' tagged temps: the next run removes them)."""
        signal.pthread_kill(threading.main_thread().ident or 0, LOST_SIGNAL)
        if not self._stop.wait(LOST_GRACE_S):
            with contextlib.suppress(OSError):
                os.write(self._python_only, f"error: {checked_line(self.lost or '')}\n".encode())
            os._exit(2)


def cluster_lost(address: str | None, name: str, place: str, seconds: int) -> str:
    """The one line of a run whose cluster went away: the address as params.yaml has it (its password hidden)."""
    shown_address = None if address is None else USERINFO.sub("***@", address)
    return (
        f"runtime.ray_address={shown_address!r}: the Ray cluster went away during the run "
        f"({name} at {place} has not answered for {seconds} s)"
    )


def _probed(ray: ModuleType) -> dict[str, str]:
    """What ClusterWatch probes: the GCS this driver joined and the raylet it talks to (host:port each)."""
    node = getattr(ray._private.worker.global_worker, "node", None)
    if node is None:  # no node this driver is connected to: nothing to watch
        return {}
    return {
        "the cluster's GCS": node.gcs_address,
        "this machine's raylet": f"{node.node_ip_address}:{node.node_manager_port}",
    }


def _shutdown_to_the_end(ray: ModuleType, lost: bool) -> None:
    """_shutdown, finished when a signal cuts it short, then the signal goes on: a SIGTERM inside ray.shutdown
    skipped the reap and left the session folder of ours behind (Ray's atexit ended what it had started). A
    second signal there ends the command at once, as in any cleanup."""
    try:
        _shutdown(ray, lost)
    except Interrupted:
        _shutdown(ray, lost)
        raise


def _shutdown(ray: ModuleType, lost: bool) -> None:
    """ray.shutdown(); after a cluster was lost, in a thread given REAP_SECONDS, and not again at exit (Ray's
    atexit): its disconnect waits on the GCS until Ray ends the process (60 s)."""
    if not lost:
        ray.shutdown()
        return
    done = threading.Thread(target=ray.shutdown, name="ray-shutdown", daemon=True)
    done.start()
    done.join(REAP_SECONDS)
    if done.is_alive():
        atexit.unregister(ray.shutdown)


# what a step's workers read that is a secret: an s3:// input's objects (dedup@S reads them on the workers), a hub
# model's snapshot (generate's actors fetch it). A proxy in the way goes with them: it may hold a password too
S3_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", *PROXY_VARIABLES)
HUB_CREDENTIALS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", *PROXY_VARIABLES)


def withheld_variables(needed: Collection[str] = ()) -> list[str]:
    """The environment variables a local Ray's processes start without: every secret (params.yaml_text's
    secret_env_values: named like one, or named by an `*_env` key of params.yaml) and every proxy variable
    holding a user or password, but those in `needed` (proxies in any letter case). Ray's workers inherit the
    environment of ray.init, and what a worker prints goes to its log file as it is: HF_TOKEN and
    OPENAI_API_KEY reached every worker of clean@S, which reads neither."""
    from scripts.lib.params.yaml_text import secret_env_values

    try:
        from scripts.lib.params import load_params

        params = load_params()  # checked once already by the stage: its `api_key_env` names
    except DataError:
        params = None  # no params.yaml here (a library call): the names alone
    names = set(secret_env_values(params)) | {name for name in os.environ if _proxy_with_userinfo(name)}
    keep = {name.lower() for name in needed}
    return sorted(name for name in names if name.lower() not in keep)


def _proxy_with_userinfo(name: str) -> bool:
    value = os.environ.get(name, "")
    return name.lower() in PROXY_VARIABLES and "@" in value.partition("://")[2 if "://" in value else 0]


@contextlib.contextmanager
def _local_environment(withheld: list[str], folder: str) -> Iterator[None]:
    """The block (ray.init: what it starts takes the environment of now) without the variables `withheld`, and
    with Ray's temp folder (RAY_TMPDIR: its sessions, logs, sockets and spilled objects) in `folder`; as it was on
    the way out: the driver's own reads (an s3:// input's footer) still need the secrets."""
    saved = {name: os.environ.get(name) for name in [*withheld, "RAY_TMPDIR"]}
    for name in withheld:
        os.environ.pop(name, None)
    os.environ["RAY_TMPDIR"] = folder
    try:
        yield
    finally:
        restore_environment(saved)


def _start_or_join(ray: ModuleType, runtime: Runtime, children_before: set[int]) -> None:
    """`ray.init` for `runtime`; a failure, a cluster that is not there or not Ray included, is one DataError."""
    address = runtime.ray_address
    python_path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    options: dict = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.CRITICAL,
        # workers import scripts.*, and parse the driver's text of params.yaml (ray_workers.worker_setup)
        "runtime_env": {
            "env_vars": {"PYTHONPATH": python_path},
            "worker_process_setup_hook": worker_setup(driver_reads()),
        },
    }
    if address in LOCAL and runtime.object_store_mb is not None:
        options["object_store_memory"] = runtime.object_store_mb * 1024 * 1024
    with _stderr_silenced() if address is not None else contextlib.nullcontext():
        if address is not None and (silence := gcs_silence(address, runtime.connect_timeout_s)):
            raise DataError(cannot_join(address, silence))
        try:
            # "local": always a new instance; None would join any cluster this machine runs (ray's default)
            ray.init(address=address or "local", **options)
        except Exception as exc:
            ray.shutdown()  # what did start (GCS, agents) goes with it
            _reap(children_before)
            raise DataError(cannot_join(address, reason(exc))) from None
        except BaseException as exc:  # Ctrl-C while Ray starts: what did start goes with it (it was left running)
            by_ray = rays_sigterm_exit(exc, signal.getsignal(signal.SIGTERM))  # before shutdown: its handler
            ray.shutdown()
            _reap(children_before)
            if by_ray:
                note(signal.SIGTERM)
                raise Interrupted(signal.SIGTERM) from None
            raise


def rays_sigterm_exit(exc: BaseException, handler: object) -> bool:
    """`exc` is what Ray's own SIGTERM handler raises: ray.init installs one for its duration (`sys.exit(signum)`),
    so a SIGTERM while Ray started (`kill PID` of dedup or clean on `runtime.engine: ray`) ended the command at
    exit 15 with no line, not the command's `interrupted (SIGTERM)` and 143. `handler`: SIGTERM's handler then."""
    from_ray = getattr(handler, "__module__", None) or ""
    return isinstance(exc, SystemExit) and exc.code == signal.SIGTERM and from_ray.split(".")[0] == "ray"


# the last line of a task's traceback, as Ray's text of a failed task brings it back: `Type: message`
_RAISED = re.compile(r"(?P<type>[A-Za-z_][\w.]*(?:Error|Exception))(?:: (?P<message>.*))?")
_DATA_ERROR = f"{DataError.__module__}.{DataError.__qualname__}"


def failure_line(exc: BaseException, stage: str) -> str:
    """One line for a failure inside Ray: the DataError a task raised, as it was, else what the task raised, by
    type and message. Ray Data wraps a task's exception in a UserCodeException whose cause stays on the worker
    (`UDF failed to process a data block.`); the task's own last line comes back in the text."""
    raised = [found for line in str(exc).splitlines() if (found := _RAISED.fullmatch(line))]
    ours = [found for found in raised if not found["type"].startswith("ray.")]
    if not ours:
        return f"{stage} on Ray failed ({exception_line(exc)})"
    last = ours[-1]
    if last["type"] == _DATA_ERROR:
        return shown(last["message"] or "")
    kind, message = last["type"].rpartition(".")[2], last["message"]
    return f"{stage} on Ray failed ({shown_short(f'{kind}: {message}' if message else kind, 200)})"


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """File descriptor 2 on /dev/null: Ray's C++ logging writes there directly, past Python's loggers. Put
    back on the way out, a Ctrl-C's included."""
    sys.stderr.flush()
    original = os.dup(2)
    try:
        with open(os.devnull, "wb") as sink:
            os.dup2(sink.fileno(), 2)
        yield
    finally:
        os.dup2(original, 2)
        os.close(original)


REAP_SECONDS = 3  # then what is left is killed: Ray is shut down, a worker has nothing of ours to finish
KILL_SECONDS, LOOK_PAUSE_S = 6, 0.05  # a killed process's exit, loaded machine included
PR_SET_CHILD_SUBREAPER = 36


def _keep_handlers(handlers: dict) -> None:
    """Put the command's signal handlers back: ray.init installs its own for SIGTERM (and its C++ core a
    crash handler), so a SIGTERM during a Ray run was a C++ stack dump and SIGABRT, not the command's
    `interrupted (SIGTERM)` and exit 143."""
    for signum, handler in handlers.items():
        if handler is not None:  # even one Python still lists: the C-level handler may be Ray's
            with contextlib.suppress(ValueError):  # not the main thread: nothing was installed there either
                signal.signal(signum, handler)


def _adopt_orphans() -> None:
    """Make this process the subreaper of what it starts: a Ray worker whose raylet has gone is reparented
    here, not to init, so _reap still finds it (one started as Ray shut down escaped a snapshot taken before)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _reap(children_before: set[int]) -> None:
    """Wait for the processes this session started to be gone before the command exits.

    `ray.shutdown()` stops the raylet and GCS; their workers notice and exit on their own, a moment later.
    A command that returned before then would leave them running past its exit code (a Ctrl-C's 130
    included), so wait REAP_SECONDS, then kill what is left, look by look, for at most KILL_SECONDS."""
    if not _gone(children_before, time.monotonic() + REAP_SECONDS, kill=False):
        _gone(children_before, time.monotonic() + KILL_SECONDS, kill=True)


def _gone(children_before: set[int], deadline: float, kill: bool) -> bool:
    """Whether the processes this session started are gone by `deadline`: waited for (and killed, `kill`) look by
    look, each listing the descendants again (one started, or orphaned to us, since is found). Gone is two empty
    looks LOOK_PAUSE_S apart: a look is not atomic (it read /proc pid by pid), and a worker its raylet's exit
    orphaned while it was read was missed by the one look that ended the wait (a Ctrl-C's exit 130 with
    processes of the run left, now and then, on a loaded machine). It was three kill rounds, and no look after."""
    empty_looks = 0
    while True:
        started = _descendants(children_before)
        empty_looks = 0 if started else empty_looks + 1
        if empty_looks == 2:
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if kill:
            for process in started:
                with contextlib.suppress(psutil.Error):
                    process.kill()
        if started:
            psutil.wait_procs(started, timeout=min(left, 0.5))
        else:
            time.sleep(min(left, LOOK_PAUSE_S))


def _descendants(children_before: set[int]) -> list[psutil.Process]:
    """The processes under this one it did not have before Ray, but another's zombie (its parent reaps it)."""
    found = []
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if process.pid not in children_before and (
                process.status() != psutil.STATUS_ZOMBIE or process.ppid() == os.getpid()
            ):
                found.append(process)
    return found


def _quiet_console() -> None:
    """Keep Ray's and Ray Data's log lines (progress, plans, failures with their stacks) off stderr: a stage's
    failure is one line of ours; Ray still writes them all to its session's log files."""
    import ray.data  # noqa: F401  (sets up Ray Data's loggers, console handler included)

    for name in ("ray", "ray.data"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setLevel(logging.CRITICAL + 1)
    import ray._private.worker as driver

    # the raylet's messages to the driver (`(raylet) A worker died or was killed while executing a task ...`, a
    # task killed for memory) were printed on stdout by a thread of Ray's whatever `log_to_driver` says, beside
    # a stage's lines at exit 0; they go to Ray's log instead (the listener looks the printer up at each message)
    driver.print_to_stdstream = _raylet_message_logged


def _raylet_message_logged(data: dict, ignore_prefix: bool = False) -> None:
    for line in data.get("lines", []):
        logging.getLogger("ray").warning("(%s) %s", data.get("pid"), line)
