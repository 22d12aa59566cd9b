"""The layout a newcomer relies on: no import cycles in scripts/, every command's module exists, and
each DVC stage's code lives in scripts/<stage>.py and is listed in that stage's deps."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

from helpers import parse_python
from scripts.cli import COMMANDS

REPO = Path(__file__).resolve().parents[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """scripts module -> the scripts modules it imports (top level or inside functions)."""
    graph = {}
    for path in (REPO / "scripts").rglob("*.py"):
        deps = set()
        for node in ast.walk(parse_python(path)):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("scripts"):
                deps.add(node.module)
                deps.update(
                    f"{node.module}.{a.name}"
                    for a in node.names
                    if (REPO / f"{node.module}.{a.name}".replace(".", "/")).with_suffix(".py").exists()
                )
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("scripts"))
        graph[module_name(path)] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            if dep not in state and (found := visit(dep, path + [dep])):
                return found
        state[node] = 2
        return None

    return next((c for n in sorted(graph) if n not in state and (c := visit(n, [n]))), None)


def test_find_cycle_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_scripts_has_no_import_cycle():
    graph = import_graph()
    assert "scripts.lib.params" in graph and "scripts.clean" in graph
    assert find_cycle(graph) is None


def test_every_command_points_at_a_real_function():
    for name, target in COMMANDS.items():
        module, _, func = target.partition(":")
        tree = parse_python(REPO / "scripts" / (module.replace(".", "/") + ".py"))
        assert (func or "cli") in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, name


def test_each_stage_lists_its_own_module_in_deps():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    for name, stage in stages.items():
        body = stage.get("do", stage)
        command = body["cmd"].split()[3]  # python -m scripts <command> ...
        module = COMMANDS[command].partition(":")[0]
        assert module.count(".") == 0, f"stage {name} runs a side tool ({module})"
        assert f"scripts/{module}.py" in body["deps"], f"stage {name}: scripts/{module}.py not in deps"


def imports_torch(path: Path) -> bool:
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.suffix == ".py" else []
    for file in files:
        for node in ast.walk(parse_python(file)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(name.split(".")[0] == "torch" for name in names):
                return True
    return False


def test_each_stage_that_runs_torch_depends_on_the_cpu_path_pin():
    """scripts/__init__.py pins the CPU code paths torch takes, which decide its output's last bits: a
    change there must rerun every stage whose code imports torch, and only those need it."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    runs_torch = set()
    for name, stage in stages.items():
        deps = stage.get("do", stage)["deps"]
        if any(dep.startswith("scripts/") and imports_torch(REPO / dep) for dep in deps):
            runs_torch.add(name)
            assert "scripts/__init__.py" in deps, f"stage {name} imports torch but does not list scripts/__init__.py"
    assert {"tiny_model", "generate", "dedup"} <= runs_torch


# Code that shapes messages, progress lines or speed, never a stage's output bytes: not a dep.
BYTE_NEUTRAL = {
    "scripts.lib": "its __init__ is a docstring",
    "scripts.lib.errors": "the exception class the CLI prints",
    "scripts.lib.progress": "progress lines on stderr",
    "scripts.lib.workers": "worker processes (runtime.workers)",
    "scripts.lib.ray_engine": "starts and stops Ray (runtime.engine)",
    "scripts.lib.ray_checks": "Ray's addresses, actor and shuffle counts (the same bytes for any value)",
}
# Imports a stage's command has but its dvc.yaml command never runs.
NOT_RUN_BY_THE_STAGE = {
    # release composes itself only without --composed; dvc.yaml passes compose@V's folder
    "release": {"scripts.compose"},
}


def code_closure(module: str, graph: dict[str, set[str]], cut: set[str]) -> set[str]:
    """`module` and every scripts module it imports, directly or not, without walking into `cut`."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name not in seen and name not in cut:
            seen.add(name)
            todo.extend(graph.get(name, ()))
    return seen


def source_file(module: str) -> str | None:
    for path in (REPO / (module.replace(".", "/") + ".py"), REPO / module.replace(".", "/") / "__init__.py"):
        if path.exists():
            return path.relative_to(REPO).as_posix()
    return None


def test_each_stage_lists_all_the_code_it_runs():
    """Editing any module a stage's command imports (directly or not) must rerun the stage, so every such
    file is in its deps (a file, or a folder holding it), but for the byte-neutral ones above."""
    graph = import_graph()
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    missing = {}
    for name, stage in stages.items():
        body = stage.get("do", stage)
        module = "scripts." + COMMANDS[body["cmd"].split()[3]].partition(":")[0]
        cut = set(BYTE_NEUTRAL) | NOT_RUN_BY_THE_STAGE.get(name, set())
        files = {source_file(m) for m in code_closure(module, graph, cut)} - {None}
        unlisted = sorted(
            f for f in files if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in body["deps"])
        )
        if unlisted:
            missing[name] = unlisted
    assert not missing, f"code a stage runs but does not list in dvc.yaml deps: {missing}"


def test_no_module_is_over_500_lines_unless_its_docstring_says_why():
    """A module over 500 lines does one job that needs them and says so in its docstring."""
    long = []
    for path in sorted((REPO / "scripts").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > 500:
            docstring = ast.get_docstring(ast.parse(text)) or ""
            if not re.search(r"over 500 lines", docstring, re.IGNORECASE):
                long.append(f"{path.relative_to(REPO)} ({text.count(chr(10))} lines)")
    assert not long, f"split these, or say in the docstring why one job needs over 500 lines: {long}"
