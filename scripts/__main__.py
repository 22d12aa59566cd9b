import atexit
import contextlib
import os
import signal
import sys

from scripts.lib.interrupts import STOPPING_SIGNALS


def _ignore_late_signals() -> None:
    """Registered first, so it runs last of the atexit callbacks: after it the interpreter only tears down
    (pyarrow's and torch's teardown takes up to a second), and Python would have reset SIGINT, SIGTERM and
    the other STOPPING_SIGNALS to their defaults, so a Ctrl-C there ended the process silently by the signal (exit -2, no line). The
    command's work is done and its output written: the signal is ignored and the command's code stands."""
    for signum in STOPPING_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


atexit.register(_ignore_late_signals)

try:
    from scripts.cli import main
except KeyboardInterrupt:  # Ctrl-C while the command's modules import, before main() handles signals
    print("interrupted (SIGINT)", file=sys.stderr)
    sys.exit(128 + signal.SIGINT)

code = main()


def _while_exiting(signum, frame):
    """A signal after main() returned, before the atexit callbacks end: the one line (unless the run was
    already interrupted and said so) and 128 + signal, at once."""
    if code < 128:
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            sys.stdout.flush()
        os.write(2, f"interrupted ({signal.Signals(signum).name})\n".encode())
    os._exit(128 + signum)


for _signum in STOPPING_SIGNALS:
    if signal.getsignal(_signum) is not signal.SIG_IGN:
        signal.signal(_signum, _while_exiting)
if code >= 128:
    # interrupted: the command removed what it had started and printed its line. The exit callbacks run (Ray's
    # stops what a Ctrl-C in ray.init left starting), then the interpreter's teardown is skipped: a library
    # interrupted mid-call can crash in it (Ray's driver after a Ctrl-C: SIGSEGV, exit -11 instead of 130, in
    # 2 of 7 runs of test_ctrl_c_on_ray_is_exit_130_with_ray_down_and_no_output)
    atexit._run_exitfuncs()
    with contextlib.suppress(OSError, ValueError, RuntimeError):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)
sys.exit(code)
