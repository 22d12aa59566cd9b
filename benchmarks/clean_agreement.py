"""How often each named cleaning rule set agrees with the reference team's own code at its commit
(issue 4, acceptance 2; issue 15, acceptance 1).

The reference (songjein/image-to-prompts-28th-solution) has no licence, so none of its code is in this
repository: the benchmark reads it from a local git mirror of that repository (`--mirror`, the git
directory), at the commit each rule set transcribes, and runs it on the fixture prompts:

| rule set     | reference code                                             | what is run per prompt |
|--------------|------------------------------------------------------------|------------------------|
| `final`      | make_captions_with_preproc.py at 942a6f8 (HEAD)            | `preprocess(p)` |
| `2023-04-04` | make_captions_with_preproc.py at 196e689                   | its __main__'s `detect(p) != "en"` skip, then `preprocess(p)` |
| `2023-03-30` | preproc_split_dataset.py at a3d5f83^ (last changed 994ff46) | `preprocess(p)` (langdetect inside) |

langdetect is seeded on both sides (DetectorFactory.seed = 0; the team's runs were unseeded). The
`final` code loads spaCy's en_core_web_sm for its PERSON rule; when spaCy or the model is not
installed (it is not on the package registry; not installable offline), spaCy is replaced by a stub
that finds no entities, and our `person_names` rule is off (it is, by default): the PERSON rule is then
measured on neither side, and the output says so.

A prompt agrees when both drop it, or both keep it with identical text; a reference exception counts
as a drop (its code crashes on empty prompts).

    python benchmarks/clean_agreement.py [--sets final 2023-04-04] [--show 10] [--out benchmarks/results/clean_agreement.txt]

Prompts: tests/fixtures/openprompts-1k.csv (`prompt` column) and gpt4-prompts-3k.txt (one per
non-empty line, as published). `--reference FILE` (a file defining `preprocess(text)`) compares the
default params with that file instead.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.util
import io
import os
import subprocess
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._record import add_out_argument, record
from scripts.lib.cleaning import clean_text, load_rule_set, load_rules
from scripts.lib.params import load_params

FIXTURES = ROOT / "tests" / "fixtures"
MIRROR = Path(os.environ.get("REFERENCE_MIRROR", "/work/.mirror/songjein+image-to-prompts-28th-solution/repo"))
# rule set -> (commit, file, the __main__ ran langdetect on the raw prompt before preprocess)
REFERENCES = {
    "final": ("942a6f8", "make_captions_with_preproc.py", False),
    "2023-04-04": ("196e689", "make_captions_with_preproc.py", True),
    "2023-03-30": ("a3d5f83^", "preproc_split_dataset.py", False),
}
SEED = 0


def fixture_prompts() -> dict[str, list[str]]:
    sets = {}
    csv_path = FIXTURES / "openprompts-1k.csv"
    if csv_path.exists():
        with csv_path.open(encoding="utf-8", newline="") as f:
            sets["openprompts-1k"] = [row["prompt"] for row in csv.DictReader(f)]
    txt_path = FIXTURES / "gpt4-prompts-3k.txt"
    if txt_path.exists():
        lines = txt_path.read_text(encoding="utf-8").splitlines()
        sets["gpt4-prompts-3k"] = [line for line in lines if line.strip()]
    return sets


def mutated(prompts: list[str], n: int, seed: int = 0) -> list[str]:
    """Real prompts with random edits that trigger the rules (digits, flags, symbols, repeats, credits)."""
    import random

    rng = random.Random(seed)
    extras = [
        "  ",
        " , ",
        "8k",
        "8 K",
        " 35mm ",
        "--ar 16:9",
        " (1999) ",
        "!!",
        " - ",
        "'",
        "\u212a",
        "\t",
        " by wlop,",
        " seed 7",
        " the the ",
        " red car red car ",
        "..",
        " _ ",
        "|",
        "—",
        ";",
        "é",
        " f/1.8 ",
        " iso 200 ",
        " -w 1024 ",
        " --steps 50 ",
        " n 9 ",
        " h300 ",
        " 768H ",
        " 4 k ",
        " by greg rutkowski and wlop ",
        " trending on artstation ",
        " unreal engine ",
        " award - winning ",
        " i'm ",
        " and",
        " DOF ",
        " fps ",
        " [digital art] ",
        " (by some painter) ",
        " 123456 ",
        " ((( ",
        " ))) ",
        " style ",
        " by ",
        ":",
        "ï¿½",
    ]
    out = []
    for _ in range(n):
        words = rng.choice(prompts).split(" ")
        for _ in range(rng.randint(1, 5)):
            words.insert(rng.randint(0, len(words)), rng.choice(extras))
        out.append(" ".join(words))
    return out


def spacy_stub_needed() -> bool:
    try:
        import spacy

        spacy.load("en_core_web_sm")
        return False
    except (ImportError, OSError):
        return True


def _stub_spacy() -> types.ModuleType:
    """A `spacy` whose model finds no entities: the reference's PERSON rule never fires."""
    module = types.ModuleType("spacy")
    module.load = lambda name: lambda text: types.SimpleNamespace(ents=())
    return module


def reference_from_mirror(name: str, mirror: Path):
    """The team's code for rule set `name`, read from the mirror at its commit, as preprocess(prompt)."""
    commit, path, detect_first = REFERENCES[name]
    try:
        source = subprocess.run(
            ["git", f"--git-dir={mirror}", "show", f"{commit}:{path}"], check=True, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        sys.exit(f"{mirror}: cannot read {commit}:{path} ({exc}); pass --mirror, the reference's git directory")
    module = types.ModuleType(f"reference_{name.replace('-', '_')}")
    saved = sys.modules.get("spacy")
    if spacy_stub_needed():
        sys.modules["spacy"] = _stub_spacy()
    try:
        exec(compile(source, f"{commit}:{path}", "exec"), module.__dict__)  # __name__ is not "__main__"
    finally:
        if saved is None:
            sys.modules.pop("spacy", None)
        else:
            sys.modules["spacy"] = saved
    preprocess = module.preprocess
    if not detect_first:
        return preprocess

    def detect_then_preprocess(prompt: str):
        prompt = prompt.strip()  # its __main__ read `line.strip()`
        try:
            if module.detect(prompt) != "en":
                return None
        except Exception:  # the reference printed "exception at" and went on
            pass
        return preprocess(prompt)

    return detect_then_preprocess


def reference_from_file(path: Path):
    spec = importlib.util.spec_from_file_location("reference_preprocess", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.preprocess


def reference_result(preprocess, prompt: str) -> str | None:
    from langdetect import DetectorFactory

    DetectorFactory.seed = SEED
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its "exception at ..." lines
            return preprocess(prompt)
    except Exception:  # the reference crashes on some inputs (e.g. empty text); that is a drop
        return None


def compare(label: str, rules, preprocess, sets: dict[str, list[str]], show: int) -> float:
    total_n = total_agree = 0
    shown = 0
    for name, prompts in sets.items():
        agree = same_decision = same_trimmed = kept_ref = kept_same = 0
        for prompt in prompts:
            ours, _ = clean_text(prompt, rules)
            theirs = reference_result(preprocess, prompt)
            same_decision += (ours is None) == (theirs is None)
            same_trimmed += (ours is None and theirs is None) or (
                ours is not None and theirs is not None and ours.rstrip() == theirs.rstrip()
            )
            if theirs is not None:
                kept_ref += 1
                kept_same += ours == theirs
            if ours == theirs:
                agree += 1
            elif shown < show:
                shown += 1
                print(f"  differs: {prompt!r}\n    ours:      {ours!r}\n    reference: {theirs!r}")
        total_n += len(prompts)
        total_agree += agree
        n = len(prompts)
        print(
            f"{label} {name}: {n} prompts, same decision {same_decision / n:.4f}, same decision and text "
            f"{agree / n:.4f} ({same_trimmed / n:.4f} ignoring trailing spaces); of the {kept_ref} the "
            f"reference kept, identical text {kept_same / max(kept_ref, 1):.4f}"
        )
    print(f"{label} all: {total_n} prompts, agreement {total_agree / total_n:.4f}")
    return total_agree / total_n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sets",
        nargs="+",
        default=list(REFERENCES),
        choices=list(REFERENCES),
        help="rule sets to compare with their reference commit",
    )
    parser.add_argument("--mirror", type=Path, default=MIRROR, help="git directory of the reference repository")
    parser.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="instead: a file defining preprocess(text), compared with --params `clean`",
    )
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--show", type=int, default=10, help="print this many disagreements per rule set")
    parser.add_argument(
        "--mutations",
        type=int,
        default=0,
        help="also compare on this many fixture prompts with random edits that trigger the rules",
    )
    add_out_argument(parser)
    args = parser.parse_args()
    sets = fixture_prompts()
    if not sets:
        sys.exit(f"no fixtures under {FIXTURES}")
    if args.mutations:
        sets["mutated"] = mutated([p for prompts in sets.values() for p in prompts], args.mutations)
    record(
        args.out,
        note="spaCy PERSON rule: "
        + ("not measured (spaCy/en_core_web_sm absent; stubbed on both sides)" if spacy_stub_needed() else "measured"),
    )
    if args.reference is not None:
        compare(
            "params",
            load_rules(load_params("clean", args.params)),
            reference_from_file(args.reference),
            sets,
            args.show,
        )
        return
    if spacy_stub_needed():
        print(
            "spaCy or en_core_web_sm is not installed: the reference's PERSON rule is stubbed out (no "
            "entities) and ours is off, so that rule is measured on neither side"
        )
    for name in args.sets:
        commit, path, _ = REFERENCES[name]
        print(f"== {name}: ours (scripts/clean_rules/{name}.yaml) vs {path} at {commit}")
        compare(name, load_rules(load_rule_set(name)), reference_from_mirror(name, args.mirror), sets, args.show)


if __name__ == "__main__":
    main()
