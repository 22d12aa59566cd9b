"""clean@S, clean_rules and clean-text: the commands over the cleaner (scripts/lib/cleaning/, docs/cleaning.md).

clean@S reads data/prompts/S.parquet and writes data/clean/S.parquet (input columns + `text`, the
cleaned prompt), data/clean/S.dropped.parquet (input columns + `reason`, the first rule that dropped
the row) and data/clean/S.report.json (counts per reason; a DVC metric), with the rule set and mode
`sources.S.clean` names, on `runtime.engine` (local processes or Ray: the same bytes).
clean_rules writes data/clean/rules.json, every rule set once, for clean@S and release@V to depend on.
clean-text cleans a text file, one prompt per line, to JSONL.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from pathlib import Path

import typer

from scripts.lib.cleaning import (
    all_rule_sets,
    clean_table,
    compile_rules,
    load_rule_set,
    pass_through,
    read_rules_file,
    report,
    resolve,
    rules_file_document,
    source_choice,
    split_rows,
)
from scripts.lib.cleaning.table import check_mode, clean_batch, slow_regex_error
from scripts.lib.errors import DataError, shown
from scripts.lib.io import atomic_path, check_files_ours, commit_together, json_text, write_json
from scripts.lib.nesting import line_safe_json
from scripts.lib.params import CleanRules, Runtime, load_section
from scripts.lib.progress import Progress
from scripts.lib.regex_deadline import RegexTooSlow
from scripts.lib.tables import ParquetChunks, check_table, row_groups_to
from scripts.lib.text_lines import decode_lines, line_batches, text_input


def cli_rules(output: Path) -> None:
    """clean_rules: validate every rule set (the default with params.yaml `clean` overrides) and write
    them to OUTPUT as the one tracked copy: clean@S and release@V depend on this file instead of on the
    rule files and `clean` params, so dvc.lock records them once."""
    check_files_ours(output)
    clean = load_section("clean")
    sets = all_rule_sets(clean)
    for name, rule_set in sets.items():
        try:
            compile_rules(rule_set)
        except DataError as exc:
            raise DataError(f"{exc} (rule set {name!r})") from None
    document = rules_file_document(clean.rules, sets)
    write_json(document, output)
    print(
        shown(
            f"clean_rules: {len(document['sets'])} rule sets ({', '.join(document['sets'])}; default "
            f"{document['rules']}) -> {output}"
        )
    )


def cli(
    source: str,
    input: Path,
    output: Path,
    rules: Path | None = typer.Option(
        None, "--rules", help="compiled rules (data/clean/rules.json); default: params.yaml clean"
    ),
) -> None:
    """clean@S: drop and rewrite prompts with the source's rule set and mode (sources.S.clean) -> output,
    its .dropped.parquet and .report.json."""
    sources = load_section("sources")
    if source not in sources:
        raise DataError(f"params.yaml: sources: no source named '{source}'")
    name, mode = source_choice(sources[source].clean)
    # before the input's footer is opened (a FIFO hung there; the rule set compiled, Ray started): a user's
    # file at an output is said first
    dropped_path, report_path = sibling_paths(output)
    check_files_ours(output, dropped_path, report_path, inputs=[input, rules])
    runtime = load_section("runtime", missing_ok=True)
    table = ParquetChunks(input, runtime.stream_rows)
    if "prompt" not in table.columns:
        raise DataError(f"{input}: no 'prompt' column (expected the normalised prompt table)")
    used, clean_chunk, on_ray = None, _pass_through, None
    if mode != "off":
        rule_set, used = chosen_rule_set(name, rules)
        compiled = compile_rules(rule_set)  # a rule that cannot run stops here, before any engine starts
        check_mode(mode)
        if runtime.engine == "ray":
            on_ray = _on_ray(input, rule_set, runtime, desc=f"clean@{source}")
            clean_chunk = _taking(on_ray, mode)
        else:
            clean_chunk = _locally(compiled, mode, local_workers(runtime), f"clean@{source}", input)
    rows_in, reasons = 0, Counter()
    # Ray (started at the first chunk) is shut down on the way out whatever happens, outside the outputs' commit
    with contextlib.closing(on_ray) if on_ray else contextlib.nullcontext(), contextlib.ExitStack() as outputs:
        kept_out = outputs.enter_context(row_groups_to(output))
        dropped_out = outputs.enter_context(row_groups_to(dropped_path))
        report_tmp = outputs.enter_context(atomic_path(report_path))
        for df in table.frames():  # a chunk at a time: memory stays flat however long the source
            check_table(df, input, strings=("prompt",))
            kept, dropped = clean_chunk(df, rows_in)
            kept_out.add(table.arrow(kept))
            dropped_out.add(table.arrow(dropped))
            rows_in += len(df)
            reasons.update(dropped["reason"].tolist())
        kept_out.finish()
        dropped_out.finish()
        report_tmp.write_text(json_text(report(source, rows_in, reasons, mode != "off", used, mode)), encoding="utf-8")
        if on_ray:
            on_ray.finish()  # Ray shut down before the outputs are renamed in
        commit_together(outputs)
    dropped_total = sum(reasons.values())
    print(
        shown(
            f"clean {source} ({used or 'no rules'}, {mode}): {rows_in} rows in, {rows_in - dropped_total} kept, "
            f"{dropped_total} dropped -> {output}"
        )
    )


def _pass_through(df, offset: int):
    return pass_through(df)


def _locally(compiled, mode: str, workers: int, desc: str, input: Path):
    def clean_chunk(df, offset: int):
        return clean_table(df, compiled, desc=desc, mode=mode, workers=workers, rows_in=shown(input), first_row=offset)

    return clean_chunk


def _on_ray(input: Path, rule_set: CleanRules, runtime: Runtime, desc: str):
    """Every row cleaned on Ray in one pass over the file, a window at a time, taken as the chunks are written."""
    from scripts.lib.cleaning.on_ray import OutcomeStream, outcome_batches

    return OutcomeStream(outcome_batches(input, "prompt", rule_set, runtime, desc=desc))


def _taking(stream, mode: str):
    def clean_chunk(df, offset: int):
        return split_rows(df, stream.take(len(df)), "prompt", mode)

    return clean_chunk


def chosen_rule_set(name: str | None, rules_file: Path | None) -> tuple[CleanRules, str]:
    """(the rule set `name` names, its name): from the rules file when given, else the shipped set (None:
    params.yaml `clean`, its named set with the overrides)."""
    if rules_file is not None:
        parsed = read_rules_file(rules_file)
        return parsed.rule_set(name, str(rules_file)), name or parsed.default
    if name is not None:
        return load_rule_set(name), name
    clean = load_section("clean")
    return resolve(clean), clean.rules


def local_workers(runtime: Runtime) -> int:
    return runtime.workers or os.cpu_count() or 1


def sibling_paths(output: Path) -> tuple[Path, Path]:
    """data/clean/S.parquet -> (data/clean/S.dropped.parquet, data/clean/S.report.json)."""
    output = Path(output)
    stem = output.name[: -len(".parquet")] if output.name.endswith(".parquet") else output.stem
    return output.with_name(f"{stem}.dropped.parquet"), output.with_name(f"{stem}.report.json")


def cli_text(
    input: Path,
    output: Path,
    rule_set: str | None = typer.Option(None, "--rules", help="a named rule set (default: params.yaml clean)"),
) -> None:
    """Clean a text file, one prompt per line -> JSONL {"text": str|null, "reason": str|null}."""
    input = text_input(input)  # a device (/dev/zero) or socket is refused; a FIFO streams
    check_files_ours(output, inputs=[input])
    rules = compile_rules(load_rule_set(rule_set) if rule_set is not None else resolve(load_section("clean")))
    line_no = 0
    with (
        input.open("rb") as src,
        atomic_path(output) as tmp,
        Progress(f"clean-text {input.name}", total=input.stat().st_size, unit="bytes") as progress,
        tmp.open("w", encoding="utf-8") as dst,
    ):
        for batch in line_batches(src, input):  # each line capped: a newline-free file held no more than the cap
            lines = decode_lines(batch, input, line_no)
            try:
                results = clean_batch(lines, rules)
            except RegexTooSlow as exc:
                raise slow_regex_error(
                    exc, rules, f"{shown(input)}: line {line_no + lines.index(exc.prompt) + 1}"
                ) from None
            line_no += len(batch)
            lines = "".join([_JSONL_LINE % (_json_value(text), _json_value(reason)) for text, reason in results])
            dst.write(line_safe_json(lines))  # a kept U+2028 escaped: one record a line for any line reader
            progress.advance(sum(map(len, batch)))


# What dumps_json({"text": ..., "reason": ...}, ensure_ascii=False) writes, a few times faster
# (no dict, no encoder set up per line): this command's output format.
_JSONL_LINE = '{"text": %s, "reason": %s}\n'
_json_string = json.JSONEncoder(ensure_ascii=False).encode


def _json_value(value: str | None) -> str:
    return "null" if value is None else _json_string(value)
