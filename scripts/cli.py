"""The one command line: `python -m scripts <command>`.

Each stage module owns a `cli` function (typer signature, thin: resolve paths, read its params
section, do I/O, call the pure core). This file only registers them and turns DataError into one
line on stderr, so bad input never shows a traceback.
"""
from __future__ import annotations

import sys

import click
import typer

from scripts.common import DataError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)

# command name -> module that defines `cli`. Modules import heavy libraries (torch, diffusers)
# inside functions, so `clean-text` starts fast.
COMMANDS = {
    "sample-data": "sample_data",
    "tiny-model": "tiny_model",
    "ingest": "ingest",
    "clean": "clean",
    "clean-text": "clean:cli_text",
    "clean-rules": "clean:cli_rules",
    "dedup": "dedup",
    "dedup-text": "dedup:cli_text",
    "generate": "generate",
    "captions": "captions",
    "split": "split",
    "release": "release",
    "diff": "diff",
    "tag": "tag",
    "synthesize": "synthesize",
    "replay-history": "history",
    "simpletuner": "readers.dalle3:cli_simpletuner",
    "plots": "report",
    "dedup-preview": "preview:cli_dedup_preview",
}


def _register() -> None:
    import importlib

    for name, target in COMMANDS.items():
        module_name, _, func_name = target.partition(":")
        try:
            module = importlib.import_module(f"scripts.{module_name}")
        except ModuleNotFoundError as exc:
            if f"scripts.{module_name}".startswith(exc.name or "?"):
                continue  # stage not written yet
            raise
        app.command(name)(getattr(module, func_name or "cli"))


def main() -> None:
    _register()
    try:
        app(standalone_mode=False)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except click.exceptions.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
