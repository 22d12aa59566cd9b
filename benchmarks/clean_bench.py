"""Speed of the cleaning filter: prompts per second on one core (issue 4, acceptance 3).

    python benchmarks/clean_bench.py [--n 1000000] [--baseline-n 100000] [--rules NAME] [--reference final|FILE] [--no-cli]

Prompts: the real fixture prompts (tests/fixtures), mutated at random (words dropped, swapped,
repeated; SD modifiers, artists, numbers and punctuation inserted) so the 1M are nearly all
distinct and exercise the rules; generated prompts when the fixtures are absent. Speed is measured
as CPU time of this process (time.process_time), so other jobs on a shared machine do not count;
wall time is printed too. Baseline, in the same run: the same rules without the guards and the
RE2 scanner (`load_rules(..., fast=False)`: every regex on every prompt), and, with --reference,
the reference team's `preprocess`: a rule set name runs their code at that set's commit, read from
the git mirror (see clean_agreement.py; not shipped), or a file defining preprocess(text).
`--rules NAME` benchmarks a named rule set (default: params.yaml `clean`).
Then the whole `python -m scripts clean-text` command on the 1M prompts written one per line
(reading, cleaning, writing JSONL), timed by the child process's CPU time.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._peak_rss import run_child
from benchmarks.clean_agreement import (
    MIRROR,
    REFERENCES,
    fixture_prompts,
    reference_from_file,
    reference_from_mirror,
    reference_result,
)
from scripts.lib.cleaning import clean_text, load_rule_set, load_rules
from scripts.lib.params import load_params

MODIFIERS = [
    "highly detailed",
    "8k",
    "4 k",
    "trending on artstation",
    "by greg rutkowski",
    "octane render",
    "35mm lens",
    "f/1.8",
    "--ar 16:9",
    "seed 1234",
    "(1999)",
    "unreal engine 5",
    "award-winning",
    "digital painting",
    "sharp focus",
    "cinematic lighting",
    "by wlop and artgerm",
    "hdr",
    "!!",
    "concept art",
    "matte painting",
    "intricate",
    "volumetric light",
    "the the",
    "4k uhd",
    ";",
]
SUBJECTS = [
    "a red fox",
    "an old lighthouse",
    "a cyberpunk city",
    "a portrait of a knight",
    "a bowl of ramen",
    "a dragon",
    "a cozy cabin",
    "a robot gardener",
    "a sailing ship",
    "a desert temple",
]
SCENES = [
    "at sunset",
    "in the rain",
    "on the moon",
    "under the sea",
    "in a misty forest",
    "at night",
    "in winter",
    "made of glass",
    "in the style of ukiyo-e",
    "with neon lights",
]


def base_prompts() -> list[str]:
    prompts = [p for ps in fixture_prompts().values() for p in ps]
    if prompts:
        return prompts
    rng = random.Random(0)  # no fixtures: generated prompt-like text
    return [
        f"{rng.choice(SUBJECTS)} {rng.choice(SCENES)}, " + ", ".join(rng.sample(MODIFIERS, rng.randint(0, 5)))
        for _ in range(5000)
    ]


def mutate(prompt: str, rng: random.Random) -> str:
    words = prompt.split()
    for _ in range(rng.randint(1, 3)):
        op = rng.random()
        if op < 0.3 and len(words) > 3:
            del words[rng.randrange(len(words))]
        elif op < 0.5 and len(words) > 3:
            i, j = rng.randrange(len(words)), rng.randrange(len(words))
            words[i], words[j] = words[j], words[i]
        elif op < 0.6 and words:
            i = rng.randrange(len(words))
            words.insert(i, words[i])
        else:
            words.insert(rng.randint(0, len(words)), rng.choice(MODIFIERS) + rng.choice(["", ","]))
    return " ".join(words)


def synthesize(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    base = base_prompts()
    return [mutate(rng.choice(base), rng) for _ in range(n)]


def rate(fn, prompts: list[str]) -> tuple[float, float]:
    """(prompts per CPU second, prompts per wall second)."""
    cpu, wall = time.process_time(), time.perf_counter()
    for prompt in prompts:
        fn(prompt)
    return len(prompts) / (time.process_time() - cpu), len(prompts) / (time.perf_counter() - wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--baseline-n", type=int, default=100_000, help="prompts for the (slow) baselines")
    parser.add_argument(
        "--reference",
        help="a rule set name (the team's code at its commit, from --mirror) or a "
        "file defining the reference preprocess(text)",
    )
    parser.add_argument("--mirror", type=Path, default=MIRROR, help="git directory of the reference repository")
    parser.add_argument("--rules", default=None, help="a named rule set (default: params.yaml `clean`)")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--no-cli", dest="cli", action="store_false", help="skip timing the clean-text command")
    args = parser.parse_args()

    params = load_params("clean", args.params) if args.rules is None else load_rule_set(args.rules)
    fast, unguarded = load_rules(params), load_rules(params, fast=False)
    prompts = synthesize(args.n)
    print(
        f"{len(prompts)} prompts ({len(set(prompts))} distinct), mean {sum(map(len, prompts)) / len(prompts):.0f} chars"
    )

    cpu, wall = rate(lambda p: clean_text(p, fast), prompts)
    kept = sum(clean_text(p, fast)[0] is not None for p in prompts[: args.baseline_n])
    print(f"clean_text: {cpu:,.0f} prompts/s CPU ({wall:,.0f} wall); {kept / min(args.n, args.baseline_n):.1%} kept")
    sample = prompts[: args.baseline_n]
    base_cpu, _ = rate(lambda p: clean_text(p, unguarded), sample)
    print(f"baseline, same rules without guards: {base_cpu:,.0f} prompts/s CPU -> speedup {cpu / base_cpu:.2f}x")
    if args.reference:
        preprocess = (
            reference_from_mirror(args.reference, args.mirror)
            if args.reference in REFERENCES
            else reference_from_file(Path(args.reference))
        )
        ref_cpu, _ = rate(lambda p: reference_result(preprocess, p), sample)
        print(f"baseline, reference preprocess: {ref_cpu:,.0f} prompts/s CPU -> speedup {cpu / ref_cpu:.2f}x")
    if args.cli:
        cli_cpu, cli_wall = command_rate(prompts)
        print(f"python -m scripts clean-text: {cli_cpu:,.0f} prompts/s CPU ({cli_wall:,.0f} wall), start-up included")


def command_rate(prompts: list[str]) -> tuple[float, float]:
    """(prompts per CPU second, per wall second) of the clean-text command, one process, one thread."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "prompts.txt", Path(tmp) / "clean.jsonl"
        src.write_text("".join(p.replace("\n", " ") + "\n" for p in prompts), encoding="utf-8")
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
        run = run_child(
            [sys.executable, "-m", "scripts", "clean-text", str(src), str(dst)], cwd=ROOT, env=env, stderr_shown=True
        )
        if run.exit_code != 0:
            raise SystemExit(f"clean-text failed (exit {run.exit_code})")
        lines = sum(1 for _ in dst.open(encoding="utf-8"))
        if lines != len(prompts):
            raise SystemExit(f"clean-text wrote {lines} lines for {len(prompts)} prompts")
    return len(prompts) / run.cpu_seconds, len(prompts) / run.seconds


if __name__ == "__main__":
    main()
