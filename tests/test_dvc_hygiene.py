"""DVC used the way DVC users expect: each stage's params are the keys that change its bytes,
a speed knob reruns nothing, the cache links instead of copying (safe: every writer replaces, none
writes into an existing file), the contact sheets are image plots, and the generation store means
a dedup.threshold flip renders nothing twice."""

from __future__ import annotations

import ast
import configparser
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from helpers import REPO, parse_python, repo_files, run, work_copy
from scripts.lib import params as P
from scripts.lib.params import Clean, Dedup, Generate

STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))

# Keys documented (scripts/lib/params/, scripts/dedup.py, scripts/generate.py) as changing speed or
# memory only; everything else in these sections changes some output's bytes.
SPEED = {
    "clean": set(),  # how fast it cleans is `runtime`, which no stage lists
    "dedup": {"embedding_batch", "embedding_block", "embedding_device"},
    "generate": {"batch_size", "compile", "sources"},  # sources: the foreach
}


def stage_params(name: str) -> list[str]:
    body = STAGES[name].get("do", STAGES[name])
    return [p for p in body.get("params", []) if isinstance(p, str)]


def keys_of(section: str, listed: list[str]) -> set[str]:
    return {p.split(".", 1)[1] for p in listed if p.startswith(section + ".")}


# --- params: only what changes bytes ---------------------------------------------------------------


@pytest.mark.parametrize(
    "stage, section, model",
    [
        ("clean_rules", "clean", Clean),
        ("dedup", "dedup", Dedup),
        ("compose", "dedup", Dedup),
        ("release", "dedup", Dedup),
        ("generate", "generate", Generate),
    ],
)
def test_stage_lists_every_output_key_and_no_speed_key(stage, section, model):
    listed = stage_params(stage)
    assert section not in listed, f"{stage} depends on all of `{section}`, speed keys included"
    assert keys_of(section, listed) == set(model.model_fields) - SPEED[section], stage


def test_every_listed_key_is_written_in_params_yaml():
    """DVC refuses a listed key that params.yaml lacks (it does not know the models' defaults)."""
    for name, _stage in STAGES.items():
        for listed in stage_params(name):
            if "${" in listed:
                continue  # per-entry keys (sources.${key}, ...): whole entries, present by construction
            node = PARAMS
            for part in listed.split("."):
                assert isinstance(node, dict) and part in node, f"{name}: {listed} not in params.yaml"
                node = node[part]


def test_no_stage_depends_on_a_whole_section_with_speed_keys():
    for name in STAGES:
        for section in SPEED:
            assert section not in stage_params(name), f"{name} depends on all of `{section}`"


def test_no_stage_lists_a_runtime_key():
    for name in STAGES:
        assert not [p for p in stage_params(name) if p.split(".")[0] == "runtime"], name


def missing_output(dep: str, state: str) -> bool:
    """A dependency that differs only because the outputs are not there: a deleted one, or a folder of
    outputs (data/dedup/) holding just its committed metrics."""
    from scripts.tools.replay_history import built_by_the_pipeline

    return state == "deleted" or (state == "modified" and built_by_the_pipeline(dep.rstrip("/") + "/"))


def test_the_committed_dvc_lock_is_this_trees(tmp_path):
    """main commits dvc.lock, the metrics and the plot data, so every pull request has a base to diff
    against: the lock must be this tree's. In a copy of the tree (lock and metrics, no outputs, no
    cache), `dvc status` may only report outputs that are missing, never a changed dependency, param
    or command, nor a stage the lock lacks. Rebuild with `dvc repro` and commit when it fails."""
    names = repo_files()
    assert "dvc.lock" in names, "dvc.lock is not committed"
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, tmp_path / name)
    run(["git", "init", "-q", "-b", "main"], tmp_path)
    status = json.loads(run(["dvc", "status", "--json"], tmp_path).stdout or "{}")
    stale = {}
    for stage, changes in status.items():
        for change in changes:
            if isinstance(change, str) or "changed params" in change or "changed command" in change:
                stale[stage] = change
            elif any(not missing_output(dep, state) for dep, state in change.get("changed deps", {}).items()):
                stale[stage] = change["changed deps"]
    assert not stale, f"dvc.lock is stale (run `dvc repro` and commit it): {dict(list(stale.items())[:5])}"
    assert {p for p in names if p.startswith("data/releases/") and p.endswith("stats.json")}, "no metrics committed"


def test_rules_json_holds_the_rules_only(tmp_path, monkeypatch):
    """clean_rules writes the same file for any runtime (workers, engine)."""
    from scripts.clean import cli_rules
    from scripts.dedup import SPEED_KEYS as DEDUP_SPEED_KEYS

    assert set(DEDUP_SPEED_KEYS) == SPEED["dedup"]
    monkeypatch.chdir(tmp_path)
    written = []
    for workers, engine in ((1, "local"), (3, "ray")):
        params = {**PARAMS, "runtime": {**PARAMS["runtime"], "workers": workers, "engine": engine}}
        Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
        cli_rules(Path(f"rules-{workers}.json"))
        written.append(Path(f"rules-{workers}.json").read_bytes())
    assert written[0] == written[1]
    doc = json.loads(written[0])  # the default set's name and every named set once, each fully resolved
    assert set(doc) == {"rules", "sets"} and doc["rules"] == PARAMS["clean"]["rules"]
    assert set(doc["sets"]) == set(P.rule_set_names())
    assert all(set(rules) <= set(P.CleanRules.model_fields) for rules in doc["sets"].values())  # unused rules left out


def test_release_card_does_not_name_speed_keys():
    """release@V does not depend on dedup.embedding_batch/_block/_device, so its README.md must not
    print them: a stale card would differ from a rebuild of the same commit."""
    from scripts.lib.card import data_card
    from scripts.lib.params import Dedup, Source, Split
    from scripts.lib.recipe import resolve_recipe

    recipe = resolve_recipe("v2", PARAMS["releases"])
    sources = {name: Source.model_validate(entry) for name, entry in PARAMS["sources"].items()}
    split = Split.model_validate(PARAMS["split"])
    stats = {
        "rows": {"train": 1, "validation": 1, "total": 2},
        "by_source": {"train": {}, "validation": {}},
        "removed": {"total": 0},
    }
    faster = Dedup.model_validate(
        {**PARAMS["dedup"], "embedding_batch": 3, "embedding_block": 5, "embedding_device": "cpu"}
    )
    assert data_card(recipe, stats, sources, faster, split) == data_card(
        recipe, stats, sources, Dedup.model_validate(PARAMS["dedup"]), split
    )


def test_dedup_speed_keys_change_no_result():
    from scripts.dedup import dedup_self

    words = ["red", "car", "blue", "sky", "old", "house", "tall", "tree", "by", "the", "river"]
    texts = [" ".join(words[(i * 7 + j) % 11] for j in range(5 + i % 4)) for i in range(120)]
    base = Dedup()
    results = [
        dedup_self(texts, None, base, P.Runtime(**change))
        for change in ({}, {"workers": 2, "batch_rows": 7}, {"verify_pairs": 3, "workers": 1})
    ]
    for other in results[1:]:
        assert (other.keep == results[0].keep).all() and (other.duplicate_of == results[0].duplicate_of).all()
        assert other.stats == results[0].stats


# --- links and writers -------------------------------------------------------------------------------


def test_cache_links_instead_of_copying():
    config = configparser.ConfigParser()
    config.read(REPO / ".dvc" / "config")
    assert config["cache"]["type"].replace(" ", "") == "reflink,hardlink,copy"


MODE = re.compile(r"[rwxabt+]{1,4}")


def _open_modes(tree: ast.AST):
    """(line, mode) of every open(...) / x.open(...) / os.open(...) call with a literal mode or flags."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name == "open" and isinstance(node.func, ast.Attribute) and getattr(node.func.value, "id", "") == "os":
            yield node.lineno, ast.unparse(node.args[1]) if len(node.args) > 1 else ""
        elif name in ("open", "fdopen"):
            values = [a for a in node.args] + [k.value for k in node.keywords if k.arg == "mode"]
            for value in values:  # the argument that looks like a mode ("rb", "a", "w+"), not a path
                if isinstance(value, ast.Constant) and isinstance(value.value, str) and MODE.fullmatch(value.value):
                    yield node.lineno, value.value


def test_no_writer_appends_to_or_rewrites_an_existing_file():
    """With cache.type hardlink a checked-out output IS the cache file (and root ignores its read-only
    mode): writing into it would corrupt the cache. Every writer goes to a new temp name + rename."""
    offenders = []
    for path in sorted((REPO / "scripts").rglob("*.py")):
        for line, mode in _open_modes(parse_python(path)):
            rel = f"{path.relative_to(REPO)}:{line}"
            if mode.startswith("os."):  # os.open flags
                appends_untracked = rel.split(":")[0] == "scripts/lib/image_store.py"  # see below
                if ("O_APPEND" in mode and not appends_untracked) or (
                    "O_RDWR" in mode and rel.split(":")[0] != "scripts/lib/io.py"
                ):
                    offenders.append(f"{rel} {mode}")
            elif "a" in mode or "+" in mode:
                offenders.append(f"{rel} {mode!r}")
    # scripts/lib/io.py's os.open(O_RDWR | O_CREAT) is output_lock's flock file beside an output, never an output;
    # image_store.py appends names to a run's journal (deleted before the stage ends, so never in the cache) and
    # to the store's index (data/image_store is not a DVC output)
    assert not offenders, offenders


def test_generation_store_is_not_a_dvc_output_and_images_are_not_persist():
    body = STAGES["generate"]["do"]
    assert body["outs"] == ["data/images/${item}"]  # not persist: DVC's run-cache works for generate@S
    assert "--store data/image_store" in body["cmd"]
    text = (REPO / "dvc.yaml").read_text(encoding="utf-8")
    assert not re.search(r"^\s*- data/image_store", text, re.M)  # its history must not reach dvc.lock


def test_contact_sheet_is_an_image_plot():
    assert STAGES["release"]["do"]["plots"] == ["data/releases/${key}/preview.jpg"]


# --- on the session build ----------------------------------------------------------------------------


def generate_lines(output: str) -> dict[str, tuple[int, int, int]]:
    """source -> (prompts, rendered, pipeline calls) from generate@S's summary line."""
    found = {}
    for source, prompts, rendered, calls in re.findall(
        r"generate@(\S+): (\d+) prompts, (\d+) rendered \((\d+) pipeline calls\)", output
    ):
        found[source] = (int(prompts), int(rendered), int(calls))
    return found


def outs_md5(repo: Path) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text(encoding="utf-8"))
    return {o["path"]: o["md5"] for stage in lock["stages"].values() for o in stage.get("outs", [])}


def set_params(repo: Path, changes: dict[str, object]) -> None:
    """params.yaml with each `section.key` set, as `dvc exp run -S` writes it (this copy loses its comments).
    DVC decides what `dvc repro` or `dvc exp run` re-runs by `dvc status`, so the tests below ask that."""
    params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    for dotted, value in changes.items():
        section, key = dotted.split(".")
        params.setdefault(section, {})[key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


@pytest.mark.slow
def test_speed_only_params_rerun_nothing(history, tmp_path):
    repo = work_copy(history.repo, tmp_path / "repo")
    set_params(
        repo,
        {
            "runtime.workers": 2,
            "runtime.batch_rows": 7,
            "runtime.verify_pairs": 11,
            "generate.batch_size": 3,
            "runtime.writers": 1,
        },
    )
    assert run("dvc status --json", repo).stdout.strip() in ("{}", "")


@pytest.mark.slow
def test_a_new_release_reruns_no_earlier_release_and_no_prefilter(history, tmp_path):
    """release@V and prefilter@S depend on their own share of `releases` (stage recipes, data/recipes/), not
    on the whole section: a release appended to params.yaml leaves every earlier one and every prefilter
    up to date (they all re-ran on each commit of the replay before)."""
    repo = work_copy(history.repo, tmp_path / "repo")
    params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    params["releases"]["v5"] = {"base": "v4-b", "steps": [{"dedup": {"scope": "after_merge", "threshold": 0.9}}]}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    ran = run(["dvc", "repro", "recipes"], repo).stdout
    assert "Running stage 'recipes'" in ran
    assert set(json.loads(run("dvc status --json", repo).stdout)) == {"compose@v5", "release@v5", "plots", "summary"}


@pytest.mark.slow
def test_threshold_flip_renders_nothing_twice(history, tmp_path):
    """dedup.threshold 0.7 -> 0.8 -> 0.7 on a copy with the DVC cache but no generation store (a fresh
    clone after `dvc pull`): 0.8 renders only rows 0.7 never had, and the way back renders nothing,
    with the run-cache off so that generate@S really runs."""
    repo = work_copy(history.repo, tmp_path / "repo")
    built = outs_md5(history.repo)
    assert not (repo / "data" / "image_store").exists()

    # one source's road is enough to prove it, and keeps the test short: dedup@S -> generate@S
    set_params(repo, {"dedup.threshold": 0.8})
    up = run(["dvc", "repro", "generate@diffusiondb"], repo)
    at_08 = generate_lines(up.stdout)  # the sources whose dedup output changed (others: "didn't change")
    assert "diffusiondb" in at_08 and set(at_08) <= set(PARAMS["generate"]["sources"]), up.stdout[-3000:]
    assert all(rendered < prompts for prompts, rendered, _ in at_08.values()), at_08  # the rest came from the cache
    assert sum(rendered for _, rendered, _ in at_08.values()) > 0, at_08  # 0.8 keeps rows 0.7 removed

    set_params(repo, {"dedup.threshold": 0.7})
    down = run(["dvc", "repro", "--no-run-cache", "generate@diffusiondb"], repo)
    at_07 = generate_lines(down.stdout)
    assert set(at_07) == set(at_08), down.stdout[-3000:]  # generate@S ran again (no run-cache), for the same sources
    assert {source: (rendered, calls) for source, (_, rendered, calls) in at_07.items()} == {
        source: (0, 0) for source in at_07
    }, at_07  # zero pipeline calls
    images = {path: md5 for path, md5 in outs_md5(repo).items() if path.startswith("data/images/")}
    assert images == {path: built[path] for path in images}  # the very bytes of the 0.7 build
    assert outs_md5(repo) == built
