import atexit
import contextlib
import os
import signal
import sys


def _hold_closed_standard_descriptors() -> None:
    """A standard descriptor the caller closed (`>&-`, `2>&-`, `<&-`) is the lowest free number: the next
    file the command opened took it, and what anything then wrote to standard error (a C library's warning,
    a worker's traceback) or read from standard input went to that file. /dev/null holds the number instead;
    Python has set sys.stdout or sys.stderr to None already, which cli.main reads as closed."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)  # never an output: no O_RDWR
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


_hold_closed_standard_descriptors()  # first: before an import opens a file that would take the number

try:  # the one line and 128 + signal at once until main() installs the command's handlers
    from scripts.lib.interrupts import STOPPING_SIGNALS, exit_at_once_on_signals, line, stop_when_parent_dies

    exit_at_once_on_signals()
except KeyboardInterrupt:  # Ctrl-C in the few imports before
    os.write(2, b"interrupted (SIGINT)\n")
    os._exit(128 + signal.SIGINT)
if "DVC_STAGE" in os.environ:  # a stage `dvc repro` runs: it stops when dvc is killed
    stop_when_parent_dies()


def _ignore_late_signals() -> None:
    """Registered first, so it runs last of the atexit callbacks: after it the interpreter only tears down
    (pyarrow's and torch's teardown takes up to a second), and Python would have reset SIGINT, SIGTERM and
    the other STOPPING_SIGNALS to their defaults, so a Ctrl-C there ended the process silently by the signal (exit -2, no line). The
    command's work is done and its output written: the signal is ignored and the command's code stands."""
    for signum in STOPPING_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


atexit.register(_ignore_late_signals)

from scripts.cli import main  # noqa: E402

code = main()


def _while_exiting(signum, frame):
    """A signal after main() returned, before the atexit callbacks end: the one line and 128 + signal, at
    once; a run already interrupted said so and keeps its first signal's code."""
    if code < 128:
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            sys.stdout.flush()
        os.write(2, f"{line(signum)}\n".encode())
    os._exit(code if code >= 128 else 128 + signum)


for _signum in STOPPING_SIGNALS:
    if signal.getsignal(_signum) is not signal.SIG_IGN:
        signal.signal(_signum, _while_exiting)
if code != 0:
    # interrupted or failed: the command removed what it had started and printed its line. The exit callbacks
    # run (Ray's stops what a Ctrl-C in ray.init left starting), then the interpreter's teardown is skipped: a
    # library stopped mid-call can crash in it (Ray's driver after a Ctrl-C: SIGSEGV, exit -11 instead of 130,
    # in 2 of 7 runs of test_ctrl_c_on_ray_is_exit_130_with_ray_down_and_no_output; dedup under `ulimit -v
    # 250000`, a library half loaded: the out-of-memory line, then SIGSEGV, exit 139 instead of 2)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):  # None where the caller closed it (`>&-`)
        with contextlib.suppress(OSError, ValueError, RuntimeError, AttributeError):
            stream.flush()
    os._exit(code)
sys.exit(code)
