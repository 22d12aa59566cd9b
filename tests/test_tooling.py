"""The developer tooling agrees with itself: pyproject.toml's dependencies are requirements.txt's pins,
the lint tools are pinned where pip installs them, pre-commit needs no network, and the Makefile has
the targets CONTRIBUTING.md names."""

from __future__ import annotations

import re
import tomllib

import yaml

from helpers import REPO


def pins(path: str) -> dict[str, str]:
    """name -> version of every `name==version` line (comments and pip options aside)."""
    found = {}
    for line in (REPO / path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line and not line.startswith("-"):
            name, version = line.split("==")
            found[re.sub(r"[-_.]+", "-", name.split("[")[0]).lower()] = version.strip()
    return found


def test_pyproject_dependencies_are_the_runtime_requirements():
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    listed = {re.sub(r"[-_.]+", "-", d.split("==")[0]).lower(): d.split("==")[1] for d in project["dependencies"]}
    assert listed == pins("requirements.txt")


def test_lint_tools_are_pinned_and_constrained_alike():
    dev, constraints = pins("requirements-dev.txt"), pins("constraints.txt")
    for tool in ("ruff", "mypy", "pre-commit"):
        assert tool in dev and dev[tool] == constraints.get(tool), tool


def test_pre_commit_hooks_are_local():
    """CI reaches PyPI only: a hook repository cloned from GitHub would fail there."""
    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    assert [repo["repo"] for repo in config["repos"]] == ["local"]
    hooks = {hook["id"]: hook for hook in config["repos"][0]["hooks"]}
    assert {"ruff-check", "ruff-format", "mypy"} <= set(hooks)
    assert all(hook["language"] == "system" for hook in hooks.values())


def test_makefile_has_the_everyday_targets():
    targets = set(re.findall(r"^([a-z-]+):", (REPO / "Makefile").read_text(encoding="utf-8"), re.M))
    assert {"setup", "repro", "test", "test-fast", "lint", "bench"} <= targets


def test_tests_import_helpers_not_conftest():
    """conftest.py holds fixtures; what tests import lives in tests/helpers/ (`from helpers import cli`)."""
    importing = sorted(
        p.name
        for p in (REPO / "tests").glob("test_*.py")
        if re.search(r"^\s*(from conftest import|import conftest)", p.read_text(encoding="utf-8"), re.M)
    )
    assert not importing, f"replace `from conftest import` with `from helpers import` in {importing}"


def collected(*args: str) -> set[str]:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-n", "0", "-p", "no:cacheprovider", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return {line for line in result.stdout.splitlines() if "::" in line}


def test_a_plain_run_leaves_out_the_slow_tier_and_make_test_runs_everything():
    """CI (README command 2) runs a plain `pytest`: the slow tier is not in it, `-m slow` is that tier
    alone, and `make test`'s selection is both (the `history` users are slow without a mark of their own)."""
    plain, slow = (
        collected("tests/test_history.py", "tests/test_tooling.py"),
        collected("-m", "slow", "tests/test_history.py", "tests/test_tooling.py"),
    )
    everything = collected("-m", "slow or not slow", "tests/test_history.py", "tests/test_tooling.py")
    assert slow and plain and not plain & slow and plain | slow == everything
    assert all("test_history.py" in test for test in slow)
    assert {test for test in everything if "test_tooling.py" in test} <= plain
    make = (REPO / "Makefile").read_text(encoding="utf-8")
    assert re.search(r'^test:.*\n\tpython -m pytest -q -m "slow or not slow"$', make, re.M)
