"""The one command line: `python -m scripts <command>`.

Each stage module owns a `cli` function (typer signature, thin: resolve paths, read its params
section, do I/O, call the pure core). This file only maps command names to those functions, imports
just the one a run needs (a stage process never pays for torch or pandas it does not use), and turns
every failure into one line on stderr with a non-zero exit code (SIGINT 130, SIGTERM 143, SIGHUP 129).
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import os
import sys

from scripts.lib.errors import DataError, os_reason, shown
from scripts.lib.failure_lines import capped, folder_gone_line, internal_error_line, traceback_asked, with_limit_hint
from scripts.lib.import_env import checked_line
from scripts.lib.interrupts import (
    STOPPING_SIGNALS,
    Interrupted,
    again_line,
    forget,
    holding,
    line,
    note,
    received,
    said,
)

OUT_OF_MEMORY = "out of memory (a smaller input, batch_rows or workers may fit)"

# command name -> "module[:function]" under scripts/ (function defaults to `cli`).
COMMANDS = {
    # DVC stages (dvc.yaml), one module each
    "tiny-model": "tiny_model",
    "tiny-encoder": "tiny_encoder",
    "synthesize": "synthesize",
    "caption": "caption",  # caption@S: vision-model captions (not `captions`, which joins images and text)
    "ingest": "ingest",
    "clean-rules": "clean:cli_rules",
    "clean": "clean",
    "dedup": "dedup",
    "recipes": "recipes",  # each release's and source's share of `releases` (release@V, prefilter@S read it)
    "prefilter": "prefilter",  # prefilter@S: release steps that run before generation
    "generate": "generate",
    "generate-prune": "generate:cli_prune",  # not a stage: shrinks the generation store (docs/generation.md)
    "captions": "captions",
    "split": "split",
    "compose": "compose",  # compose@V: a release's rows (release@V writes them in its layout)
    "release": "release",
    "plots": "plots",
    "summary": "summary",  # the one metrics file `dvc exp show` puts first
    # file-level commands usable outside DVC (docs/contracts.md)
    "clean-text": "clean:cli_text",
    "dedup-text": "dedup:cli_text",
    # side tools
    "diff": "tools.diff",
    "pr-build": "tools.pr_build",
    "pr-comment": "tools.pr_comment",
    "pr-comment-post": "tools.pr_comment:cli_post",
    "publish": "tools.publish",
    "tag": "tools.tag",
    "replay-history": "tools.replay_history",
    "sample-data": "tools.sample_data",
    "simpletuner": "tools.simpletuner",
    "simpletuner-config": "tools.simpletuner:cli_config",
    "dedup-preview": "tools.dedup_preview",
    "params-doc": "tools.params_doc",
    "history-table": "tools.history_table",
}


def command_function(name: str):
    module_name, _, func_name = COMMANDS[name].partition(":")
    return getattr(importlib.import_module(f"scripts.{module_name}"), func_name or "cli")


def build_app(argv: list[str]):
    """A typer app holding only the command named in argv (all of them for --help or a typo)."""
    import typer

    app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
    app.callback()(lambda: None)  # a group even when it holds one command: `python -m scripts NAME ARGS`
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name in [wanted] if wanted in COMMANDS else COMMANDS:
        app.command(name)(command_function(name))
    return app


def _install_signal_handlers() -> dict:
    """SIGINT, SIGTERM and the other STOPPING_SIGNALS raise Interrupted in the main thread; a second one during the cleanup ends
    the process at once (its temp files are removed by the next run), but never while outputs are being
    renamed in (interrupts.held: a second Ctrl-C there left a release half renamed). Returns the old handlers."""
    import os
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    forget()

    def handler(signum, frame):
        if os.getpid() != pid:  # a forked worker (dedup's pool) that kept our handler: the parent decides
            if signum == signal.SIGTERM:
                os._exit(128 + signum)
            return
        if holding():  # outputs are being renamed in together: any signal waits the few renames out
            note(signum)
            return
        if (first := received()) is not None:  # the exit is the first signal's (130 for SIGINT, then SIGTERM)
            start = "\n" if getattr(sys.stderr, "mid_line", False) else ""
            os.write(2, f"{start}{again_line(signum)}\n".encode())
            os._exit(128 + first)
        note(signum)
        raise Interrupted(signum)

    pid = os.getpid()
    global _FORK_HOOK
    if not _FORK_HOOK:  # forked workers: Ctrl-C (sent to the whole process group) is the parent's to
        # handle, it stops the pool; SIGTERM ends a worker quietly. No traceback from any of them.
        os.register_at_fork(after_in_child=_worker_signals)
        _FORK_HOOK = True

    # a signal the parent set to be ignored (e.g. SIGINT of a shell's background job) stays ignored
    return {
        signum: signal.signal(signum, handler)
        for signum in STOPPING_SIGNALS
        if signal.getsignal(signum) is not signal.SIG_IGN
    }


_FORK_HOOK = False


def _worker_signals() -> None:
    """A forked worker: SIGTERM (the parent stopping its pool) ends it at once; every other stopping
    signal is the parent's to handle (a closed terminal's SIGHUP reaches the whole group, as Ctrl-C does)."""
    import signal

    for signum in STOPPING_SIGNALS:
        disposition = signal.SIG_DFL if signum == signal.SIGTERM else signal.SIG_IGN
        handler = signal.getsignal(signum)
        if getattr(handler, "__qualname__", "").startswith("_install_signal_handlers"):
            signal.signal(signum, disposition)


def _restore_signal_handlers(old: dict) -> None:
    import signal

    for signum, previous in old.items():
        signal.signal(signum, previous)


class _LineTracker:
    """sys.stderr during a command, noting whether the last write ended a line: a signal can arrive
    between a print's text and its newline, and the `interrupted` line must still be a line of its own."""

    def __init__(self, stream):
        self._stream = stream
        self.mid_line = False

    def write(self, text):
        written = self._stream.write(_redacted(text))
        if text:
            self.mid_line = not text.endswith("\n")
        return written

    def __getattr__(self, name):
        return getattr(self._stream, name)


_CLOSED = OSError(errno.EBADF, "closed (`>&-`)")


class _StandardOutput:
    """sys.stdout during a command: a write or flush that fails is a DataError naming standard output,
    as a failed write to any output is. Its reader gone (`| head -1`: EPIPE) was exit 1 and no line (click
    turns a broken pipe into a silent `sys.exit(1)`); `>&-` (Python's sys.stdout is None) printed nothing
    at exit 0, the table lost; `> /dev/full` was `No space left on device`, naming no output."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        if self._stream is None:
            raise _standard_output_failed(_CLOSED)
        text = _redacted(text)
        try:
            return self._stream.write(text)
        except UnicodeEncodeError:
            return self._stream.write(_in_encoding(text, self._stream.encoding))
        except OSError as exc:
            raise _standard_output_failed(exc) from None

    def flush(self):
        try:
            if self._stream is not None:
                self._stream.flush()
        except OSError as exc:
            raise _standard_output_failed(exc) from None

    def isatty(self):
        return self._stream is not None and self._stream.isatty()

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _redacted(text):
    """`text` as it may be printed (import_env.redact_line: no secret known to this process, in any encoding),
    written on standard output or error: a success line quoting an output path or a source name that holds a key,
    a progress line, a warning, a table on stdout was printed as given, where an error line was redacted. Text that
    cannot be checked (at the open-file limit the secrets cannot be read) is left out, never shown as it came."""
    if not isinstance(text, str) or not text.strip() or text in _NO_DATA:
        return text
    return checked_line(text)


_NO_DATA: set[str] = set()  # lines of ours that quote nothing (no path, no value): shown even where _redacted fails


def _in_encoding(text: str, encoding: str | None) -> str:
    """`text` with each character `encoding` lacks as its escape (`\\xe9`), as Python writes stderr. An ASCII,
    Latin-1 or Windows cp1252 standard output (PYTHONIOENCODING, a locale, a Windows pipe) took no Hangul or
    `é`: history-table and diff printed nothing and exited 2, and a stage whose output was written failed its
    success line, exit 2 at `cannot be encoded as ascii (a file name that is not UTF-8?)`."""
    encoding = encoding or "utf-8"
    return text.encode(encoding, "backslashreplace").decode(encoding)


def _standard_output_failed(exc: OSError) -> DataError:
    """The one line for standard output; what is still buffered is dropped (fd 1 made /dev/null), or
    Python's flush at exit would fail again and print an `Exception ignored` traceback after it."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    reason = os_reason(exc)
    if exc.errno == errno.EPIPE:
        reason += " (what read it stopped reading: the output is cut short)"
    return DataError(f"standard output: {reason}")


def _flushed(code: int) -> int:
    """`code`, or the one line when what the command printed cannot be written out (unless it failed
    already and said so)."""
    try:
        sys.stdout.flush()
    except DataError as exc:
        return _error(str(exc)) if code == 0 else code
    return code


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code (0 ok, 1 a bug of ours (one line), 2 bad input or usage, 130 SIGINT,
    143 SIGTERM)."""
    old_handlers = _install_signal_handlers()
    stdout, stderr, unraisable = sys.stdout, sys.stderr, sys.unraisablehook
    sys.stdout = _StandardOutput(stdout)
    # a closed standard error (None) loses its lines: print(file=None) would write them on standard output
    sys.stderr = _LineTracker(stderr if stderr is not None else open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115
    sys.unraisablehook = _quiet_interrupts(unraisable)
    try:
        # `>&-` is known before the work: found at the command's success line, it failed a run whose
        # outputs were already in place
        code = _flushed(_main(argv)) if stdout is not None else _error(str(_standard_output_failed(_CLOSED)))
        if (signum := received()) is not None and code != 128 + signum:  # the run went on all the same
            return _interrupted(signum)
        return code
    except Interrupted as exc:  # raised outside _main's own try (e.g. while it returns)
        return _interrupted(exc.signum)
    except MemoryError:  # while a failure was handled (its line's lazy imports): a traceback and exit 1
        return _error(OUT_OF_MEMORY)
    except Exception:
        # after a signal whose exception a library swallowed, the run went on in a state the unwinding
        # left broken (a half-imported module): the failure is the signal's, not a bug to show
        if (signum := received()) is not None:
            return _interrupted(signum)
        return _internal_error(sys.exc_info()[1])
    finally:
        sys.stdout, sys.stderr = stdout, stderr
        if getattr(sys.unraisablehook, "quiets_interrupts", False):  # not when _silence_finalizers set one
            sys.unraisablehook = unraisable
        _restore_signal_handlers(old_handlers)


def _quiet_interrupts(previous):
    """sys.unraisablehook that drops an Interrupted raised where Python cannot pass it on (an at-fork
    hook, a finalizer): the signal is noted, so main still ends with the one `interrupted` line, and the
    "Exception ignored in ..." traceback Python would print before it is not printed."""

    def hook(unraisable) -> None:
        if not isinstance(unraisable.exc_value, Interrupted):
            previous(unraisable)

    hook.quiets_interrupts = True  # type: ignore[attr-defined]
    return hook


def _interrupted(signum: int) -> int:
    start = "\n" if getattr(sys.stderr, "mid_line", False) else ""
    # it quotes nothing: a signal during the first imports left redaction's own imports broken, and the
    # line was `(a line left out: ...)` in its place
    _NO_DATA.add(f"{start}{line(signum)}")
    _say(f"{start}{line(signum)}")
    said()
    _silence_finalizers()
    return 128 + signum


def _error(text: str, code: int = 2) -> int:
    if (signum := received()) is not None:  # a failure after a signal is the signal's (see main)
        return _interrupted(signum)
    gone = folder_gone_line()  # the folder deleted under the command: an import or path failed for that (exit 2)
    said = f"error: {gone}" if gone else f"error: {_failure_line(text)}"
    if gone:
        _NO_DATA.add(said)  # it quotes nothing: shown though redaction's own imports went with the folder
    _say(said)
    _silence_finalizers()
    return 2 if gone else code


def _failure_line(text: str) -> str:
    """`text` as the error line shows it: whatever it quotes (a server's reply, a name, a path typed) redacted, no
    password or key shown. Redacting imports what names the secrets (params, the key encodings): at the open-file
    limit those imports fail, and the OSError was a traceback at exit 1; the text is then left out, not shown as
    it came."""
    unchecked: list[str] = []

    def left_out(reason: str) -> str:
        unchecked.append(
            with_limit_hint(f"the failure's line could not be checked for secrets ({reason}), so it is left out")
        )
        _NO_DATA.add(f"error: {unchecked[0]}")
        return unchecked[0]

    said = checked_line(text, left_out)
    return said if unchecked else capped(with_limit_hint(shown(said)))


def _internal_error(exc: BaseException | None) -> int:
    """A failure no check of ours foresaw: its one line (failure_lines.internal_error_line) and exit 1, where bad
    input is 2; the traceback, on asking (T2I_TRACEBACK=1), is raised on to Python."""
    if exc is None or traceback_asked():
        raise  # re-raises the exception being handled: the traceback asked for
    return _error(internal_error_line(exc), code=1)


def _say(line: str) -> None:
    """`line` on standard error. One that cannot take it (`2>/dev/full`, its reader gone) loses the line,
    never the exit code: the OSError was a traceback no one could read, and exit 1."""
    with contextlib.suppress(OSError, ValueError):
        print(line, file=sys.stderr, flush=True)


def _silence_finalizers() -> None:
    """After the one line: an object the failure abandoned can fail in its finalizer (a parquet writer
    whose file the cleanup closed first) and Python would print an "Exception ignored" traceback, at once
    or at exit. The line has said what happened; the temp file is gone either way."""
    sys.unraisablehook = lambda unraisable: None


def _unencodable(exc: UnicodeEncodeError) -> str:
    """A name that is not UTF-8 is named; other text (a reply, a table cell: any length) is not printed."""
    text = str(exc.object)
    if len(text) <= 4096 and "\n" not in text:
        return f"{one_line(text)}: cannot be encoded as {exc.encoding} (a file name that is not UTF-8?); rename it"
    return f"text of {len(text)} characters cannot be encoded as {exc.encoding} (a lone surrogate?)"


def one_line(text: str) -> str:
    """An error message as the one line it must be: a newline, an escape code or any other character
    that is not printable (a file name's, a key's, a byte that is not UTF-8) is shown escaped."""
    from scripts.lib.io import shown

    return shown(text)


def os_error_line(exc: OSError) -> str:
    """`<path>: <strerror>` (both paths of a rename), or the reason alone when the error names no path."""
    reason = exc.strerror or (str(exc).splitlines() or [type(exc).__name__])[0]
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {reason}" if paths else reason


def _run_app(argv: list[str]):
    """The command's typer app, run; any failure that a MemoryError caused is that MemoryError."""
    try:
        return build_app(argv)(args=argv, prog_name="python -m scripts", standalone_mode=False)
    except Exception as exc:
        if _out_of_memory(exc):
            raise MemoryError from None
        raise


def _out_of_memory(exc: BaseException) -> bool:
    """`exc` is a MemoryError or was raised while one was handled: a handler that turns what a library
    raised into a line about the data also caught the MemoryError of a memory limit (`ulimit -v`). A
    release said its image "was replaced after ingest", and a rule set's handler, formatting the empty
    message's first line, failed with an IndexError traceback of 80 lines."""
    seen = 0
    while exc is not None and seen < 100:
        if isinstance(exc, MemoryError) or _torch_out_of_memory(exc) or _library_out_of_memory(exc):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _torch_out_of_memory(exc: BaseException) -> bool:
    """torch's own out-of-memory errors, which are RuntimeErrors, not MemoryErrors: its CPU allocator's
    `DefaultCPUAllocator: can't allocate memory` (a tiny_encoder or tiny_model too wide for `ulimit -v` was a
    67-line traceback, exit 1) and a GPU's torch.OutOfMemoryError. Told by name: torch is not imported here."""
    if type(exc).__name__ == "OutOfMemoryError" and type(exc).__module__.partition(".")[0] == "torch":
        return True
    return isinstance(exc, RuntimeError) and "DefaultCPUAllocator: can't allocate memory" in str(exc)


def _library_out_of_memory(exc: BaseException) -> bool:
    """A memory limit (`ulimit -v`) in a library's own words, neither a MemoryError: the dynamic loader could
    not map a shared library (`ImportError: ...so: failed to map segment from shared object`, told as "a bad
    environment variable ..., or a broken install?") and Arrow could not start a thread for its stack
    (`Failed to launch worker thread`, told as "unreadable parquet data" of a file that is fine)."""
    if isinstance(exc, ImportError):
        return "failed to map segment from shared object" in str(exc)
    return type(exc).__module__.partition(".")[0] == "pyarrow" and "Failed to launch worker thread" in str(exc)


WIDTHS = (40, 1000)  # the terminal widths typer's help and usage errors are laid out in


def _bounded_terminal_width() -> None:
    """COLUMNS and TERMINAL_WIDTH lay out typer's help and usage errors, every line padded to the width by
    rich: COLUMNS=99999999 printed `split --help` as 500 MB in 20 s and went on, 1e21 was an OverflowError
    traceback, 0 printed the help as one empty line. A width that is no whole number in WIDTHS is dropped,
    as if unset (80 columns off a terminal)."""
    low, high = WIDTHS
    for name in ("COLUMNS", "TERMINAL_WIDTH"):
        value = os.environ.get(name, "").strip()
        if not value:
            continue
        # len first: int() of 5,000 digits is a ValueError
        if not (value.isascii() and value.isdigit() and len(value) <= len(str(high)) and low <= int(value) <= high):
            del os.environ[name]


def _main(argv: list[str] | None) -> int:
    _bounded_terminal_width()
    if gone := folder_gone_line():
        return _error(gone)
    try:
        import typer
        from typer._click.exceptions import ClickException, NoArgsIsHelpError  # typer 0.29 vendors click

        from scripts.lib.errors import DataError
        from scripts.lib.import_env import check_on_import, import_failure_line
        from scripts.lib.io import note_folder_spellings
        from scripts.lib.marks import note_command
        from scripts.lib.params.base import one_read_per_run

        check_on_import()  # a library's bad environment variable: one line naming it, before it is imported
        argv = sys.argv[1:] if argv is None else argv
        note_folder_spellings(argv)
        note_command(next((a for a in argv if not a.startswith("-")), ""))  # what it writes is this command's
        try:
            with one_read_per_run():  # every section the command loads from one text of params.yaml
                status = _run_app(argv)
        except DataError as exc:
            return _error(one_line(str(exc)))
        except OSError as exc:  # one no stage turned into a DataError: the path and the reason, one line
            return _error(one_line(os_error_line(exc)))
        except UnicodeEncodeError as exc:  # a name that is not UTF-8 met a library that needs text
            return _error(_unencodable(exc))
        except MemoryError:
            return _error(OUT_OF_MEMORY)
        except NoArgsIsHelpError as exc:  # `python -m scripts` alone: the help text is the answer
            exc.show()
            return 0
        except ClickException as exc:  # usage errors: one line, exit 2
            return _error((exc.format_message().splitlines() or [""])[0], exc.exit_code)
        except typer.Exit as exc:
            return exc.exit_code
        except typer.Abort:
            return _interrupted(2)
        except Exception as exc:  # a library failing while it is imported (the command's or a lazy import)
            line = import_failure_line(exc)
            if line is None:
                return _internal_error(exc)
            return _error(line)
    except Interrupted as exc:
        return _interrupted(exc.signum)
    except KeyboardInterrupt:  # no handler of ours (not the main thread): Python's own SIGINT
        return _interrupted(2)
    # standalone_mode=False: typer returns the code of a typer.Exit raised by the command (and 130
    # for a KeyboardInterrupt it caught itself); a command returning normally gives None
    if status == 130:
        return _interrupted(2)
    return status if isinstance(status, int) else 0
