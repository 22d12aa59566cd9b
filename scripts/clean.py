"""clean@S: the reference team's prompt filter (docs/cleaning.md), with every rule in params.yaml `clean`.

Reads data/prompts/S.parquet, writes data/clean/S.parquet (input columns + `text`, the cleaned
prompt), data/clean/S.dropped.parquet (input columns + `reason`, the first rule that dropped the
row) and data/clean/S.report.json (counts per reason; a DVC metric).

`load_rules` compiles params.yaml `clean` once into a frozen `Rules`; `clean_text` runs the
rewrite phases in order, each followed by its group of drop rules (`DROP_RULES`: named tests of
the text, the name being both the params key and the `reason`). What each phase does (limits,
word lists, regexes) comes only from params. The rewrites run on scripts/lib/regex_engine.py,
which skips, exactly, the regexes that cannot change a text (>= 20k prompts/s on one core).

Re-cleaning (the release stage, v4-b): call `clean_table(df, rules)` on rows that already carry
`text`. It cleans `prompt` again, never `text`: the raw prompt is the source of truth, cleaning is
not idempotent, and re-cleaning must reproduce exactly what this stage would have written. Rows the
filter drops go to the dropped table; kept rows get `text` rewritten.
"""
from __future__ import annotations

import copy
import functools
import json
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from scripts.lib.errors import DataError
from scripts.lib.io import atomic_path, check_table, read_parquet, write_json, write_parquet
from scripts.lib.params import load_params
from scripts.lib.regex_engine import (Phase, Rewrite, Search, compile_phase, compile_rewrite, compile_search,
                                      is_plain, run_phase)

# Reason for rows whose prompt is missing or only whitespace (the reference crashed on them), and
# for rows the rewrites emptied completely (the reference returned "").
EMPTY = "empty"
EMPTY_AFTER_CLEAN = "empty_after_clean"


# --------------------------------------------------------------------------- compiled rules

@dataclass(frozen=True)
class ByClause:
    marker: str
    exempt: str
    and_marker: str
    cut_if_commas_after: int
    cut_if_names_after: int
    remove_to_comma: Phase  # one rewrite: delete "by ... ," (a phase, so it gets the guards)


@dataclass(frozen=True)
class Rules:
    language: tuple[str, ...] | None  # languages kept, None = rule off
    language_seed: int
    banned_nospace: tuple[str, ...]
    max_dashes: int
    max_pipes: int
    person_names: Any  # callable(text) -> number of PERSON entities, None = rule off
    max_persons: int
    ban_words: Search | None  # searched in the lowercase text
    max_repeat_ratio: float
    min_mean_word_len: float
    normalise: Phase
    max_commas: int
    by_clause: ByClause
    phrases: Phase  # deletes stop phrases, then "by artist"/artist, then "by site"/site
    tidy: Phase
    min_chars: int
    max_chars: int
    min_unique_words: int
    collapse_repeats: Phase
    thought_phrases: Search | None
    finish: Phase
    drop_rules: dict[str, tuple]  # DROP_RULES without the rules that are off
    workers: int = 1  # processes for clean_table (same output for any number)
    fast: bool = True  # guards on (see load_rules)
    keeps_plain: bool = False  # no rewrite can make printable-ASCII text otherwise (see clean_text)
    params: dict = field(default_factory=dict, compare=False, repr=False)  # what it was compiled from


def load_rules(params_clean: dict, fast: bool = True) -> Rules:
    """Compile params.yaml `clean` into Rules; a bad entry is a DataError naming its key.

    `fast=False` leaves out the regex guards (same results, slower): the benchmark's baseline and
    the tests' proof that the guards never change an output."""
    if not isinstance(params_clean, dict):
        raise DataError("params.yaml: clean: expected a mapping of rules")
    missing = [key for key in _required_keys() if key not in params_clean]
    if missing:
        raise DataError(f"params.yaml: clean: missing rule(s) {', '.join(missing)}")
    p = params_clean
    language = p.get("language") or {}
    persons = p.get("person_names") or {}
    off = {key for key in OPTIONAL_KEYS if not (p.get(key) or {}).get("enabled")}
    phrases = [_phrase(x, "stop_phrases", fast) for x in _strings(p, "stop_phrases")]
    for key in ("artists", "sites"):
        for name in _strings(p, key):
            phrases += [_phrase("by " + name, key, fast), _phrase(name, key, fast)]
    thoughts = _strings(p, "thought_phrases")
    ban_words = [w.lower() for w in _strings(p, "ban_words")]
    phases = {key: _rewrites(p, key, fast) for key in ("normalise", "tidy", "collapse_repeats", "finish")}
    phases["phrases"] = compile_phase(tuple(phrases), fast)
    by_clause = _by_clause(p["by_clause"], fast)
    phases["by_clause"] = by_clause.remove_to_comma
    return Rules(
        language=tuple(language.get("keep", ["en"])) if language.get("enabled") else None,
        language_seed=int(language.get("seed", 0)),
        banned_nospace=tuple(_strings(p, "banned_nospace")),
        max_dashes=_number(p, "max_dashes", int),
        max_pipes=_number(p, "max_pipes", int),
        person_names=_person_counter(persons.get("model", "en_core_web_sm")) if persons.get("enabled") else None,
        max_persons=int(persons.get("max_persons", 1)),
        ban_words=compile_search("|".join(map(re.escape, ban_words)), fast) if ban_words else None,
        max_repeat_ratio=_number(p, "max_repeat_ratio", float),
        min_mean_word_len=_number(p, "min_mean_word_len", float),
        normalise=phases["normalise"],
        max_commas=_number(p, "max_commas", int),
        by_clause=by_clause,
        phrases=phases["phrases"],
        tidy=phases["tidy"],
        min_chars=_number(p, "min_chars", int),
        max_chars=_number(p, "max_chars", int),
        min_unique_words=_number(p, "min_unique_words", int),
        collapse_repeats=phases["collapse_repeats"],
        thought_phrases=(
            compile_search(r"(?i)\b(" + "|".join(map(re.escape, thoughts)) + r")\b", fast) if thoughts else None
        ),
        finish=phases["finish"],
        drop_rules={group: tuple(rule for rule in rules if rule[0] not in off) for group, rules in DROP_RULES.items()},
        workers=_workers(p.get("workers", 1)),
        fast=fast,
        keeps_plain=all(phase.plain_steps is not None for phase in phases.values()),
        params=copy.deepcopy(p),
    )


def _strings(p: dict, key: str) -> list[str]:
    value = p[key] or []
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise DataError(f"params.yaml: clean.{key}: expected a list of strings")
    return [str(v) for v in value]


def _workers(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DataError(f"params.yaml: clean.workers: expected a whole number >= 1, got {value!r}")
    return value


def _number(p: dict, key: str, kind: type) -> Any:
    value = p[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"params.yaml: clean.{key}: expected a number, got {value!r}")
    return kind(value)


def _rewrites(p: dict, key: str, fast: bool) -> Phase:
    steps = p[key] or []
    if not isinstance(steps, list):
        raise DataError(f"params.yaml: clean.{key}: expected a list of rewrites")
    compiled = []
    for i, step in enumerate(steps):
        where = f"clean.{key}[{i}]"
        if not isinstance(step, dict) or "name" not in step or ("find" in step) == ("pattern" in step):
            raise DataError(f"params.yaml: {where}: expected {{name, find|pattern, repl?, strip?}}")
        compiled.append(_rewrite(step, where, fast))
    return compile_phase(tuple(compiled), fast)


def _rewrite(step: dict, where: str, fast: bool) -> Rewrite:
    """A rewrite from its params entry {name, find|pattern, repl?, strip?}; `where` names it in errors."""
    name, repl, strip = str(step["name"]), str(step.get("repl", "")), bool(step.get("strip", False))
    if "find" in step:
        return compile_rewrite(name, find=str(step["find"]), repl=repl, strip=strip, fast=fast)
    return compile_rewrite(name, pattern=str(step["pattern"]), repl=repl, strip=strip, fast=fast,
                           where=f"params.yaml: {where}")


def _phrase(phrase: str, key: str, fast: bool) -> Rewrite:
    """A phrase deleted as whole words in any case, the text trimmed after (like the reference)."""
    step = {"name": f"{key}: {phrase}", "pattern": r"(?i)\b" + re.escape(phrase) + r"\b", "strip": True}
    return _rewrite(step, f"clean.{key}: {phrase!r}", fast)


def _by_clause(p: Any, fast: bool) -> ByClause:
    if not isinstance(p, dict):
        raise DataError("params.yaml: clean.by_clause: expected a mapping")
    try:
        return ByClause(
            marker=str(p["marker"]),
            exempt=str(p["exempt"]),
            and_marker=str(p["and_marker"]),
            cut_if_commas_after=int(p["cut_if_commas_after"]),
            cut_if_names_after=int(p["cut_if_names_after"]),
            remove_to_comma=compile_phase((_rewrite({"name": "by_clause.remove_to_comma", "pattern": str(p["remove_to_comma"])},
                                             "clean.by_clause.remove_to_comma", fast),), fast),
        )
    except KeyError as exc:
        raise DataError(f"params.yaml: clean.by_clause: missing {exc.args[0]}") from None


def _person_counter(model: str) -> Callable[[str], int]:
    """The reference's NER rule; spaCy and its model must already be installed (no downloads)."""
    try:
        import spacy

        nlp = spacy.load(model)
    except (ImportError, OSError) as exc:
        raise DataError(
            f"params.yaml: clean.person_names.enabled needs spaCy with the {model} model installed "
            f"({type(exc).__name__}); set it to false or install them"
        ) from None
    return lambda text: sum(1 for ent in nlp(text).ents if ent.label_ == "PERSON")


# --------------------------------------------------------------------------- drop rules

def wrong_language(text: str, rules: Rules) -> bool:
    return rules.language is not None and _language(text, rules.language_seed) not in rules.language


def has_banned_nospace(text: str, rules: Rules) -> bool:
    """One of `banned_nospace` occurs once the spaces are deleted ("h t t p" is "http")."""
    nospace = text.replace(" ", "")
    for word in rules.banned_nospace:  # plain loops: no generator per prompt
        if word in nospace:
            return True
    return False


def too_many_dashes(text: str, rules: Rules) -> bool:
    return text.count("-") > rules.max_dashes


def too_many_pipes(text: str, rules: Rules) -> bool:
    return text.count("|") > rules.max_pipes


def too_many_persons(text: str, rules: Rules) -> bool:
    return rules.person_names is not None and rules.person_names(text) > rules.max_persons


def has_ban_word(text: str, rules: Rules) -> bool:
    return rules.ban_words is not None and rules.ban_words.found(text.lower())


def too_repetitive(text: str, rules: Rules) -> bool:
    words = _words(text)
    return (len(words) - len(set(words))) / len(words) > rules.max_repeat_ratio


def words_too_short(text: str, rules: Rules) -> bool:
    words = _words(text)
    return len("".join(words)) / len(words) < rules.min_mean_word_len


def too_many_commas(text: str, rules: Rules) -> bool:
    return text.count(",") > rules.max_commas


def too_short(text: str, rules: Rules) -> bool:
    return len(text) < rules.min_chars


def too_long(text: str, rules: Rules) -> bool:
    return len(text) > rules.max_chars


def too_few_unique_words(text: str, rules: Rules) -> bool:
    return len(set(text.split())) < rules.min_unique_words


def has_thought_phrase(text: str, rules: Rules) -> bool:
    return rules.thought_phrases is not None and rules.thought_phrases.found(text)


# The whitespace words of a (stripped, non-empty) text; two rules in a row read them. Read only.
_words = functools.lru_cache(maxsize=1)(str.split)

DropRule = Callable[[str, Rules], bool]

# The drop rules, in the order they run: (name, predicate). The name is the rule's params.yaml
# `clean` key and the `reason` recorded for the rows it drops (the stage report counts rows per
# reason); the predicate gets the text as it stands and the compiled rules, and says whether to
# drop. Each group runs after the rewrite phase it is named for ("raw": the stripped prompt,
# before any rewrite); the first rule that fires is the reason. Adding one: docs/cleaning.md.
DROP_RULES: dict[str, tuple[tuple[str, DropRule], ...]] = {
    "raw": (
        ("language", wrong_language),
        ("banned_nospace", has_banned_nospace),
        ("max_dashes", too_many_dashes),
        ("max_pipes", too_many_pipes),
        ("person_names", too_many_persons),
        ("ban_words", has_ban_word),
        ("max_repeat_ratio", too_repetitive),
        ("min_mean_word_len", words_too_short),
    ),
    "normalise": (
        ("max_commas", too_many_commas),
    ),
    "tidy": (  # after the by-clause cut, the deleted phrases and tidy
        ("min_chars", too_short),
        ("max_chars", too_long),
        ("min_unique_words", too_few_unique_words),
    ),
    "collapse_repeats": (
        ("thought_phrases", has_thought_phrase),
    ),
    "finish": (),
}

# The params keys of the rewrite phase before each group, and the rules that are off unless
# `enabled` (all other keys are required).
PHASE_KEYS = {
    "raw": (), "normalise": ("normalise",), "tidy": ("by_clause", "stop_phrases", "artists", "sites", "tidy"),
    "collapse_repeats": ("collapse_repeats",), "finish": ("finish",),
}
OPTIONAL_KEYS = ("language", "person_names")


def _required_keys() -> list[str]:
    """The `clean` keys params must have, in the order the filter uses them."""
    keys = [key for group, drops in DROP_RULES.items() for key in (*PHASE_KEYS[group], *(name for name, _ in drops))]
    return [key for key in keys if key not in OPTIONAL_KEYS]


REQUIRED_KEYS = _required_keys()


# --------------------------------------------------------------------------- the filter

def clean_text(text: str | None, rules: Rules) -> tuple[str | None, str | None]:
    """Clean one prompt: (cleaned text, None), or (None, name of the first rule that dropped it).
    The rewrite phases run in order; after each, its group of drop rules (see DROP_RULES)."""
    if text is None:
        return None, EMPTY
    text = text.strip()
    if not text:
        return None, EMPTY

    # 1. drops on the raw prompt
    for name, drop in rules.drop_rules["raw"]:
        if drop(text, rules):
            return None, name
    # Printable-ASCII text stays so through every phase when each rewrite's new text is (deletions
    # and cuts keep it): worked out once, told to every phase.
    plain = True if rules.keeps_plain and is_plain(text) else None

    # 2. normalise punctuation and strip technical jargon
    text = run_phase(rules.normalise, text, plain)
    for name, drop in rules.drop_rules["normalise"]:
        if drop(text, rules):
            return None, name

    # 3-4. artist credits, stop phrases, artists and sites; 5. drops on what is left
    text = _cut_by_clause(text, rules.by_clause, plain)
    if rules.phrases.rewrites:
        text = run_phase(rules.phrases, text.strip(), plain)
    text = run_phase(rules.tidy, text, plain)
    for name, drop in rules.drop_rules["tidy"]:
        if drop(text, rules):
            return None, name

    # 6. repeats; 7. "thought" texts
    text = run_phase(rules.collapse_repeats, text, plain)
    for name, drop in rules.drop_rules["collapse_repeats"]:
        if drop(text, rules):
            return None, name

    # 8. final touches
    text = run_phase(rules.finish, text, plain)
    if not text:
        return None, EMPTY_AFTER_CLEAN
    for name, drop in rules.drop_rules["finish"]:
        if drop(text, rules):
            return None, name
    return text, None


def _cut_by_clause(text: str, by: ByClause, plain: bool | None = None) -> str:
    """Drop an artist credit: cut at the first marker when a list of names follows it, then delete
    "by ... ," up to the nearest comma. Texts with the exempt form ("surrounded by") are left alone
    (a cut keeps a prefix, so a text without it never gains it)."""
    if by.exempt in text:
        return text
    index = text.find(by.marker)
    if index >= 0 and text[index + 2 :].count(",") >= by.cut_if_commas_after:
        text = _cut_at(text, index)
    index = text.find(by.marker)
    if index >= 0:
        after = text[index + 2 :]  # like the reference: from the marker's "y", so it is not counted
        if after.count(by.and_marker) + after.count(by.marker) >= by.cut_if_names_after:
            text = _cut_at(text, index)
    return run_phase(by.remove_to_comma, text, plain)


def _cut_at(text: str, index: int) -> str:
    text = text[:index].strip()
    return text[:-1] if text.endswith(",") else text


def _language(text: str, seed: int) -> str:
    """langdetect's guess, seeded so it is the same on every run; undetectable text counts as kept
    (the reference logged the exception and kept the prompt)."""
    try:
        from langdetect import DetectorFactory, detect
        from langdetect.lang_detect_exception import LangDetectException
    except ImportError:
        raise DataError("params.yaml: clean.language.enabled needs the langdetect package") from None
    DetectorFactory.seed = seed
    try:
        return detect(text)
    except LangDetectException:
        return "en"


# --------------------------------------------------------------------------- tables

def clean_table(df, rules: Rules, column: str = "prompt", desc: str = "clean"):
    """Clean `column` of every row: (kept rows + `text`, dropped rows + `reason`), order preserved.
    `desc` names the loop in its progress bar and summary line (e.g. "clean@diffusiondb")."""
    import pandas as pd

    if column not in df.columns:
        raise DataError(f"clean: input table has no '{column}' column")
    values = [None if _missing(v) else str(v) for v in df[column].tolist()]
    distinct = list(dict.fromkeys(v for v in values if v is not None))  # real sources repeat prompts a lot
    cleaned = dict(zip(distinct, _clean_many(distinct, rules, desc)))
    results = [cleaned[v] if v is not None else (None, EMPTY) for v in values]
    keep = pd.Series([text is not None for text, _ in results], index=df.index, dtype=bool)
    kept = df[keep].copy()
    kept["text"] = pd.Series([t for t, _ in results if t is not None], index=kept.index, dtype="string")
    dropped = df[~keep].copy()
    dropped["reason"] = pd.Series([r for t, r in results if t is None], index=dropped.index, dtype="string")
    return kept.reset_index(drop=True), dropped.reset_index(drop=True)


PARALLEL_MIN_ROWS = 20_000  # below this, starting worker processes costs more than it saves


def _clean_many(texts: list[str], rules: Rules, desc: str = "clean") -> list[tuple[str | None, str | None]]:
    """clean_text over many texts, in `rules.workers` processes when there are enough of them.
    Workers rebuild the rules from their params (compiled regexes and lambdas do not pickle)."""
    from scripts.lib.progress import track

    if rules.workers <= 1 or len(texts) < PARALLEL_MIN_ROWS:
        return [clean_text(text, rules) for text in track(texts, desc=desc, unit="distinct prompts")]
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # no fork: the parent may hold pyarrow threads
    with context.Pool(rules.workers, initializer=_start_worker, initargs=(rules.params, rules.fast)) as pool:
        results = pool.imap(_clean_in_worker, texts, chunksize=2000)  # imap: in order, counted as they come
        return list(track(results, total=len(texts), desc=desc, unit="distinct prompts"))


_WORKER_RULES: Rules | None = None


def _start_worker(params: dict, fast: bool) -> None:
    import signal

    # Ctrl-C reaches the whole process group: the parent stops the pool and prints the one line; a
    # worker printing its own KeyboardInterrupt traceback would add a screenful
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    global _WORKER_RULES
    _WORKER_RULES = load_rules(params, fast=fast)


def _clean_in_worker(text: str) -> tuple[str | None, str | None]:
    return clean_text(text, _WORKER_RULES)


def pass_through(df, column: str = "prompt"):
    """`sources.S.clean: false`: every row kept unchanged, `text` = the raw prompt (v4-a's bug)."""
    kept = df.copy()
    kept["text"] = kept[column].astype("string")
    dropped = df.iloc[0:0].copy()
    dropped["reason"] = kept["text"].iloc[0:0]
    return kept.reset_index(drop=True), dropped.reset_index(drop=True)


def report(source: str, rows_in: int, dropped, applied: bool) -> dict:
    reasons = Counter(dropped["reason"].tolist())
    return {
        "source": source,
        "cleaning_applied": applied,
        "rows_in": rows_in,
        "kept": rows_in - len(dropped),
        "dropped": len(dropped),
        "dropped_by_reason": dict(sorted(reasons.items())),
    }


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def sibling_paths(output: Path) -> tuple[Path, Path]:
    """data/clean/S.parquet -> (data/clean/S.dropped.parquet, data/clean/S.report.json)."""
    output = Path(output)
    stem = output.name[: -len(".parquet")] if output.name.endswith(".parquet") else output.stem
    return output.with_name(f"{stem}.dropped.parquet"), output.with_name(f"{stem}.report.json")


# --------------------------------------------------------------------------- commands

SPEED_KEYS = ("workers",)  # `clean` keys that change speed only: not in rules.json, not DVC params of clean_rules


def read_rules_params(rules_file: Path | None) -> dict:
    """The `clean` params: from the compiled rules file when given (what DVC tracks), else params.yaml."""
    if rules_file is None:
        return load_params("clean")
    rules_file = Path(rules_file)
    if not rules_file.exists():
        raise DataError(f"{rules_file}: rules file not found (run the clean_rules stage first)")
    try:
        return json.loads(rules_file.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DataError(f"{rules_file}: not valid JSON ({exc})") from None


def cli_rules(output: Path) -> None:
    """clean_rules: validate params.yaml `clean` and write it to OUTPUT as the one tracked copy.

    Every clean@S and release@V depends on this file instead of on the `clean` params, so dvc.lock
    records the (long) rule lists once, not once per stage."""
    params_clean = load_params("clean")
    load_rules(params_clean)  # a bad rule fails here, once, naming its key
    # the rules only: `workers` changes speed, never a result (clean@S reads it from params.yaml), so a
    # new worker count leaves this file, and every stage depending on it, unchanged
    params_clean = {key: value for key, value in params_clean.items() if key not in SPEED_KEYS}
    write_json(params_clean, output)
    print(f"clean_rules: {len(params_clean)} rule entries -> {output}")


def cli(
    source: str,
    input: Path,
    output: Path,
    rules: Optional[Path] = typer.Option(None, "--rules", help="compiled rules (data/clean/rules.json); default: params.yaml clean"),
) -> None:
    """clean@S: drop and rewrite prompts with the cleaning rules (or pass through when
    sources.S.clean is false) -> output, its .dropped.parquet and .report.json."""
    sources = load_params("sources")
    if source not in (sources or {}):
        raise DataError(f"params.yaml: sources: no source named '{source}'")
    applied = bool((sources[source] or {}).get("clean", True))
    df = read_parquet(input)
    if "prompt" not in df.columns:
        raise DataError(f"{input}: no 'prompt' column (expected the normalised prompt table)")
    check_table(df, input, strings=("prompt",))
    if applied:
        compiled = load_rules(read_rules_params(rules))
        if rules is not None:  # the rules file holds no `workers` (SPEED_KEYS): params.yaml's applies
            compiled = replace(compiled, workers=_workers(load_params("clean").get("workers", 1)))
        kept, dropped = clean_table(df, compiled, desc=f"clean@{source}")
    else:
        kept, dropped = pass_through(df)
    dropped_path, report_path = sibling_paths(output)
    write_parquet(dropped, dropped_path)
    write_json(report(source, len(df), dropped, applied), report_path)
    write_parquet(kept, output)
    print(f"clean {source}: {len(df)} rows in, {len(kept)} kept, {len(dropped)} dropped -> {output}")


def cli_text(input: Path, output: Path) -> None:
    """Clean a text file, one prompt per line -> JSONL {"text": str|null, "reason": str|null}."""
    input = Path(input)
    if not input.exists():
        raise DataError(f"{input}: input not found")
    rules = load_rules(load_params("clean"))
    line_no = 0
    with input.open("rb") as src, atomic_path(output) as tmp:
        with tmp.open("w", encoding="utf-8") as dst:
            while batch := src.readlines(1 << 20):  # ~1 MB at a time: one decode and one write per batch
                lines = _decode_lines(batch, input, line_no)
                line_no += len(batch)
                results = [clean_text(line.rstrip("\r\n"), rules) for line in lines]
                dst.write("".join([_JSONL_LINE % (_json_value(text), _json_value(reason)) for text, reason in results]))


def _decode_lines(batch: list[bytes], input: Path, line_no: int) -> list[str]:
    """The batch's lines as text (split at "\\n" only, like the file's lines); invalid UTF-8 is an
    error naming its line."""
    try:
        lines = b"".join(batch).decode("utf-8").split("\n")
    except UnicodeDecodeError:
        for offset, raw in enumerate(batch, start=line_no + 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{input}: line {offset}: not valid UTF-8") from None
        raise
    if lines[-1] == "":
        lines.pop()  # after the batch's last "\n"
    return lines


# What json.dumps({"text": ..., "reason": ...}, ensure_ascii=False) writes, a few times faster
# (no dict, no encoder set up per line): this command's output format.
_JSONL_LINE = '{"text": %s, "reason": %s}\n'
_json_string = json.JSONEncoder(ensure_ascii=False).encode


def _json_value(value: str | None) -> str:
    return "null" if value is None else _json_string(value)
