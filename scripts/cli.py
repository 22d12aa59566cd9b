"""The one command line: `python -m scripts <command>`.

Each stage module owns a `cli` function (typer signature, thin: resolve paths, read its params
section, do I/O, call the pure core). This file only maps command names to those functions, imports
just the one a run needs (a stage process never pays for torch or pandas it does not use), and turns
every failure into one line on stderr with a non-zero exit code.
"""
from __future__ import annotations

import importlib
import sys

# command name -> "module[:function]" under scripts/ (function defaults to `cli`).
COMMANDS = {
    # DVC stages (dvc.yaml), one module each
    "tiny-model": "tiny_model",
    "synthesize": "synthesize",
    "ingest": "ingest",
    "clean-rules": "clean:cli_rules",
    "clean": "clean",
    "dedup": "dedup",
    "generate": "generate",
    "captions": "captions",
    "split": "split",
    "release": "release",
    "plots": "plots",
    # file-level commands usable outside DVC (docs/contracts.md)
    "clean-text": "clean:cli_text",
    "dedup-text": "dedup:cli_text",
    # side tools
    "diff": "tools.diff",
    "tag": "tools.tag",
    "replay-history": "tools.replay_history",
    "sample-data": "tools.sample_data",
    "simpletuner": "tools.simpletuner",
    "dedup-preview": "tools.dedup_preview",
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


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code (0 ok, 2 bad input or usage, 130 SIGINT)."""
    import typer
    from typer._click.exceptions import ClickException, NoArgsIsHelpError  # typer 0.29 vendors click

    from scripts.lib.errors import DataError

    argv = sys.argv[1:] if argv is None else argv
    try:
        build_app(argv)(args=argv, prog_name="python -m scripts", standalone_mode=False)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, typer.Abort):
        print("interrupted", file=sys.stderr)
        return 130
    except NoArgsIsHelpError as exc:  # `python -m scripts` alone: the help text is the answer
        exc.show()
        return 0
    except ClickException as exc:  # usage errors: one line, exit 2
        print(f"error: {exc.format_message()}".splitlines()[0], file=sys.stderr)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    return 0
