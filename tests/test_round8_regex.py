"""Round 8: a rewrite regex from params.yaml or a rules file that backtracks without end (nested
repeats, an overlapping alternation inside a repeat, a backreference, a lookahead wrapping a repeat)
stops `clean`, `clean-text` and a release's clean step within its time bound (scripts/lib/regex_deadline.py),
in one `error:` line naming the rule, the file and the row, exit 2, nothing written. Before, each
ran without end. Every shipped rule set runs under a tight bound with the same outcomes.

Each command runs in a subprocess with a hard timeout, so a regression fails instead of hanging CI.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from helpers.tiers import fast_first

REPO = Path(__file__).resolve().parents[1]
LIMIT_S = "0.5"  # T2I_REGEX_SECONDS for the commands: the hostile rows fail fast
TIMEOUT_S = 60  # per command: far past the bound, far short of a hang
RAY_TIMEOUT_S = 240  # starting Ray on a busy 2-core runner takes most of a minute

# "aaa...a!" after some words: every hostile pattern below tries ~2^35 ways to match it
TEXT = "a lovely photo of a red cat sitting on a mat near a window " + "a" * 35 + "!"
NON_ASCII = TEXT.replace("cat", "café cat")  # not printable ASCII: the RE2 prefilter cannot screen it
WITH_B = TEXT.replace("lovely", "big")  # holds the "b" a pattern's literal guard looks for


class Case(NamedTuple):
    key: str  # the clean rule list the pattern goes in
    pattern: str
    text: str
    command: str  # clean | clean --rules | clean workers | clean-text | recipe


CASES = {
    "finish: lookahead wrapping nested repeats": Case("finish", r"(?=(a+)+$)", TEXT, "clean"),
    "normalise: backreference to nested repeats": Case("normalise", r"((a*)*)\1$", TEXT, "clean"),
    "tidy: overlapping alternation in a repeat": Case("tidy", r"(a|aa)+$", NON_ASCII, "clean"),
    "collapse_repeats: word repeat in a repeat": Case("collapse_repeats", r"(\w+\s?)*$", TEXT, "clean"),
    "finish via a --rules file": Case("finish", r"(?=(a+)+$)", TEXT, "clean --rules"),
    "finish in the local engine's workers": Case("finish", r"((a*)*)\1$", TEXT, "clean workers"),
    "clean-text: nested repeats on non-ASCII": Case("normalise", r"(a+)+$", NON_ASCII, "clean-text"),
    "clean-text: star of stars": Case("finish", r"(?:a*a*)*b", WITH_B, "clean-text"),
    "a release recipe's clean step": Case("finish", r"(?=(a+)+$)", TEXT, "recipe"),
}

WORKER_ROWS = 20_001  # past cleaning.table.PARALLEL_MIN_ROWS: the rows go to worker processes
HOSTILE_ROW = 15_000


def write_params(root: Path, key: str, pattern: str, **extra) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["clean"][key] = [{"name": "hostile", "pattern": pattern, "repl": "Z"}]
    params.update(extra)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def write_prompts(path: Path, prompts: list[str]) -> None:
    n = len(prompts)
    none = pa.array([None] * n, pa.string())
    table = {
        "id": [f"{i:016x}" for i in range(n)],
        "source": ["dalle3"] * n,
        "prompt": prompts,
        "split": none,
        "image": none,
        "width": pa.array([None] * n, pa.float64()),
        "height": pa.array([None] * n, pa.float64()),
        "meta": ["{}"] * n,
    }
    pq.write_table(pa.table(table), path)


def run(argv: list[str], root: Path, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "T2I_REGEX_SECONDS": LIMIT_S}
    return subprocess.run([sys.executable, *argv], cwd=root, env=env, capture_output=True, text=True, timeout=timeout)


# A release's clean step (compose_ops.cleaner, as compose@V and release@V run it) on rows of a split
RECIPE = """
import sys
import pandas as pd
from scripts.lib.compose import ROW_COLUMNS
from scripts.lib.compose_ops import cleaner
from scripts.lib.errors import DataError
from scripts.lib.params import CleanStep
rows = pd.DataFrame({c: [None, None] for c in ROW_COLUMNS})
rows["id"], rows["source"], rows["text"] = ["a" * 16, "b" * 16], "dalle3", ["a red cat", sys.argv[1]]
try:
    cleaner("rules.json")(rows, CleanStep(rules="final"))
except DataError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)
"""


def run_case(case: Case, root: Path) -> tuple[subprocess.CompletedProcess, list[str]]:
    """The command of `case` in `root`; (its result, what the error line must name)."""
    if case.command == "clean-text":
        write_params(root, case.key, case.pattern)
        (root / "in.txt").write_text(f"a red cat\n{case.text}\n", encoding="utf-8")
        return run(["-m", "scripts", "clean-text", "in.txt", "out/c.jsonl"], root), ["in.txt: line 2"]
    if case.command == "recipe":
        write_params(root, case.key, case.pattern)
        assert run(["-m", "scripts", "clean-rules", "rules.json"], root).returncode == 0
        return run(["-c", RECIPE, case.text], root), ["row 1 (id bbbbbbbbbbbbbbbb)"]
    prompts, row = ["a red cat", case.text], 1
    extra = {}
    if case.command == "clean workers":
        prompts = [f"photo number {i} of a red cat" for i in range(WORKER_ROWS)]
        prompts[HOSTILE_ROW], row = case.text, HOSTILE_ROW
        extra["runtime"] = {"workers": 2}
    write_params(root, case.key, case.pattern, **extra)
    write_prompts(root / "p.parquet", prompts)
    argv = ["-m", "scripts", "clean", "dalle3", "p.parquet", "out/c.parquet"]
    if case.command == "clean --rules":
        assert run(["-m", "scripts", "clean-rules", "rules.json"], root).returncode == 0
        argv += ["--rules", "rules.json"]
    return run(argv, root), [f"p.parquet: row {row} (id {row:016x})"]


@pytest.mark.parametrize("case", fast_first([pytest.param(case, id=name) for name, case in CASES.items()], keep=4))
def test_a_regex_that_backtracks_without_end_fails_in_one_line(case, tmp_path):
    before = set(tmp_path.iterdir())
    result, names = run_case(case, tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    for name in [*names, f"clean.{case.key}[0] (hostile)", repr(case.pattern), f"over {LIMIT_S} s"]:
        assert name in lines[0]
    assert "Traceback" not in result.stderr
    written = {p.name for p in set(tmp_path.iterdir()) - before} - {"params.yaml", "p.parquet", "in.txt", "rules.json"}
    assert not written or (written == {"out"} and not any((tmp_path / "out").iterdir())), written


@pytest.mark.slow
def test_ray_actors_bound_their_regexes_too(tmp_path):
    pytest.importorskip("ray")
    write_params(tmp_path, "finish", r"(?=(a+)+$)", runtime={"engine": "ray", "workers": 1})
    write_prompts(tmp_path / "p.parquet", ["a red cat", TEXT])
    result = run(["-m", "scripts", "clean", "dalle3", "p.parquet", "out/c.parquet"], tmp_path, timeout=RAY_TIMEOUT_S)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(errors) == 1 and "p.parquet: row 1: params.yaml: clean.finish[0] (hostile)" in errors[0]
    assert "Traceback" not in result.stderr and not (tmp_path / "out" / "c.parquet").exists()


def test_every_shipped_rule_runs_under_a_tight_bound_with_the_same_outcomes(monkeypatch):
    """Every shipped rule set, and params.yaml `clean`, over real prompts: no regex call comes
    near a 0.25 s bound, and the bounded batch gives exactly what each prompt cleaned alone gives."""
    from scripts.lib.cleaning import clean_text, load_rule_set, load_rules, resolve
    from scripts.lib.cleaning.table import clean_batch
    from scripts.lib.params import load_section, rule_set_names
    from scripts.lib.regex_deadline import limit_s

    monkeypatch.chdir(REPO)
    monkeypatch.setenv("T2I_REGEX_SECONDS", "0.25")
    assert limit_s() == 0.25
    prompts = (REPO / "tests" / "fixtures" / "gpt4-prompts-3k.txt").read_text(encoding="utf-8").splitlines()[:1000]
    rule_sets = [load_rule_set(name) for name in rule_set_names()] + [resolve(load_section("clean"))]
    for rule_set in rule_sets:
        rules = load_rules(rule_set)
        assert clean_batch(prompts, rules) == [clean_text(prompt, rules) for prompt in prompts]
