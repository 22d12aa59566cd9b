"""params.yaml checked against dvc.yaml, as DVC will use it, before any stage runs.

The models fill in a default for a key left out, but DVC does not know the defaults: a key dvc.yaml lists in a
stage's `params:` (`sources.${key}.clean`, `dedup.seed`) and params.yaml lacks makes DVC refuse that stage
("Parameters ... are missing") only when it runs, after the stages before it ran. Likewise a null value that
dvc.yaml pastes into a command or path (`${item.images}`) becomes the word `None`, and a dependency inside the
folders stages write (`data/images/X`) that no stage writes and that does not exist fails at its stage. Each is
found here from dvc.yaml's own lists, every foreach entry resolved as DVC resolves it (`${key}`, `${item}`,
`${item.x}`, `${section.x}`), and refused at any stage's start in one line. A dvc.yaml that is absent or that
this reading cannot follow is left to DVC, which refuses a bad one before it runs anything.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from scripts.lib.errors import DataError, quoted

DVC_FILE = "dvc.yaml"
DEFAULT_PARAMS = "params.yaml"  # the file DVC reads a stage's plain `params:` keys and interpolations from
INTERPOLATION = re.compile(r"\$\{\s*([^{}]*?)\s*\}")
GLOB = re.compile(r"[*?\[]")  # DVC's params paths may be dpath globs: left to DVC


class Unresolved(Exception):
    """An interpolation this reading does not follow (DVC resolves or refuses it itself)."""


def check_listed_params(params: dict, params_path: Path) -> None:
    """One DataError naming params.yaml, the key and the stage, for the first stage of the dvc.yaml beside
    `params_path` that lists a key `params` lacks, pastes a null into its command or paths, or depends on a
    path inside the folders stages write that no stage writes and that does not exist."""
    root = params_path.parent
    stages = _dvc_stages(root / DVC_FILE)
    if not stages or params_path.name != DEFAULT_PARAMS:  # dvc.yaml's plain keys and ${...} read params.yaml
        return
    file = str(params_path)
    resolved = list(_resolved_stages(stages, params))
    outs = WrittenPaths(
        _normal(out) for _, _, spec, context in resolved for out, _ in _paths(spec.get("outs"), context)
    )
    written_folders = _written_folders(stages)
    for name, origin, spec, context in resolved:
        for key in _listed_keys(spec.get("params"), context):
            if not _present(params, key):
                raise DataError(
                    f"{file}: {key}: missing, but dvc.yaml lists it in the params of stage {name} (DVC refuses "
                    "that stage, 'Parameters ... are missing', after the stages before it ran; it does not know "
                    "the defaults): write the key out"
                )
        _check_no_null(name, origin, spec, context, file)
        for dep, template in _paths(spec.get("deps"), context):
            normal = _normal(dep)
            folder = next((f for f in written_folders if normal.startswith(f + "/")), None)
            if folder is None or outs.touches(normal) or os.path.lexists(root / dep):
                continue
            where = _origin_key(template, origin) or f"dvc.yaml's deps of {name}"
            raise DataError(
                f"{file}: {where}: {quoted(dep)} does not exist and no stage writes it ({written_folders[folder]}), "
                f"but stage {name} depends on it (DVC refuses that stage after the stages before it ran); name a "
                "path that exists or that a stage writes"
            )


def _dvc_stages(dvc_file: Path) -> dict:
    """dvc.yaml's `stages`, or {} when it is absent or not readable as a mapping of stages (DVC's to report)."""
    from scripts.lib.io import config_text
    from scripts.lib.params.yaml_text import read_yaml

    if not os.path.isfile(dvc_file):
        return {}
    try:
        data = read_yaml(config_text(dvc_file))
    except Exception:  # a syntax error, an alias, too deep: DVC's to report, before it runs any stage
        return {}
    stages = data.get("stages") if isinstance(data, dict) and not data.get("vars") else None
    return stages if isinstance(stages, dict) else {}


def _resolved_stages(stages: dict, params: dict) -> Iterator[tuple[str, str | None, dict, dict]]:
    """(stage name as DVC shows it, params key path of its foreach entry or None, its definition, its
    interpolation context) for every stage and foreach entry DVC would make of dvc.yaml."""
    for stage, spec in stages.items():
        if not isinstance(spec, dict) or "matrix" in spec or "wdir" in spec or "wdir" in (spec.get("do") or {}):
            continue  # a matrix, or paths and params read from another folder: left to DVC
        if "foreach" not in spec:
            yield str(stage), None, spec, {}
            continue
        entries, section = _foreach_entries(spec.get("foreach"), params)
        body = spec.get("do")
        if not isinstance(body, dict):
            continue
        for label, key, item in entries:
            origin = f"{section}.{label}" if section is not None else None
            yield f"{stage}@{label}", origin, body, {"key": key, "item": item}


def _foreach_entries(foreach: Any, params: dict) -> tuple[list[tuple[str, Any, Any]], str | None]:
    """([(label, ${key}, ${item})], params key path of the foreach, if it is one) of a foreach value."""
    section = None
    if isinstance(foreach, str) and (whole := INTERPOLATION.fullmatch(foreach.strip())):
        section = whole[1]
        try:
            foreach = _lookup(params, section)
        except Unresolved:
            return [], None
    if isinstance(foreach, dict):
        return [(str(k), k, v) for k, v in foreach.items()], section
    if isinstance(foreach, list):
        plain = all(isinstance(v, (str, int, float, bool)) for v in foreach)
        return [(str(v) if plain else str(n), n, v) for n, v in enumerate(foreach)], None
    return [], None


def _lookup(data: Any, dotted: str) -> Any:
    """The value at a dotted path (`item.images`, `generate.sources`), as DVC's context reads it."""
    for part in dotted.split("."):
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            raise Unresolved(dotted)
    return data


def _value(expression: str, context: dict) -> Any:
    name = expression.split(".", 1)[0]
    if name in ("key", "item"):
        return _lookup(context, expression)
    raise Unresolved(expression)  # a params value in a command: not a path this check follows


def _substituted(text: str, context: dict) -> str:
    """`text` with each ${...} replaced as DVC writes it; Unresolved for one this reading does not follow."""

    def one(match: re.Match) -> str:
        value = _value(match[1], context)
        if isinstance(value, (dict, list)) or value is None:
            raise Unresolved(match[1])
        return ("true" if value else "false") if isinstance(value, bool) else str(value)

    return INTERPOLATION.sub(one, text)


def _listed_keys(listed: Any, context: dict) -> Iterator[str]:
    """The params.yaml keys a stage's `params:` lists, resolved (a key of another file or a glob: skipped)."""
    for entry in listed if isinstance(listed, list) else []:
        keys: Any = [entry] if isinstance(entry, str) else []
        if isinstance(entry, dict):
            keys = [k for file, ks in entry.items() if file == DEFAULT_PARAMS for k in (ks or [])]
        for key in keys:
            try:
                key = _substituted(str(key), context)
            except Unresolved:
                continue
            if not GLOB.search(key):
                yield key


def _present(params: Any, key: str) -> bool:
    """Whether DVC finds `key` in params.yaml (dpath.get with '.': a list item by its index)."""
    try:
        _lookup(params, key)
    except Unresolved:
        return False
    return True


def _check_no_null(name: str, origin: str | None, spec: dict, context: dict, file: str) -> None:
    """Refuse a null that dvc.yaml pastes into the stage's command or paths: DVC writes it as the word None."""
    texts = [spec.get("cmd")] if isinstance(spec.get("cmd"), str) else list(spec.get("cmd") or [])
    texts += [*_templates(spec.get("deps")), *_templates(spec.get("outs"))]
    for text in texts:
        for match in INTERPOLATION.finditer(str(text)):
            try:
                value = _value(match[1], context)
            except Unresolved:
                continue
            if value is None:
                where = _origin_key(match[0], origin) or match[1]
                raise DataError(
                    f"{file}: {where}: null, which dvc.yaml pastes into stage {name} ({match[0]}) as the word "
                    "None, a path that does not exist (DVC runs the stages before it first); write the path"
                )


def _paths(listed: Any, context: dict) -> Iterator[tuple[str, str]]:
    """(resolved path, as written) of a deps or outs list; one this reading cannot resolve is skipped."""
    for template in _templates(listed):
        try:
            yield _substituted(template, context), template
        except Unresolved:
            continue


def _templates(listed: Any) -> Iterator[str]:
    """The paths of a deps or outs list as written (an entry with options is a one-key mapping)."""
    for entry in listed if isinstance(listed, list) else []:
        yield from [str(entry)] if isinstance(entry, str) else map(str, entry) if isinstance(entry, dict) else []


def _origin_key(template: str, origin: str | None) -> str | None:
    """`sources.S.images` for `${item.images}` of the foreach entry at `origin`: the key the user wrote."""
    whole = INTERPOLATION.fullmatch(template.strip())
    if origin is None or whole is None or not whole[1].startswith("item."):
        return None
    return f"{origin}.{whole[1].removeprefix('item.')}"


def _normal(path: str) -> str:
    return posixpath.normpath(path.replace("\\", "/")).removeprefix("./")


class WrittenPaths:
    """The normalised paths stages write, indexed by their folders: asking about a path costs its length, not
    the number of outs (each dep was compared with every out: 10,000 releases, 40,000 outs and deps, ran for
    minutes at every stage's start)."""

    def __init__(self, outs: Iterable[str]):
        self.outs = set(outs)
        self.folders_above = {out[:cut] for out in self.outs for cut in _slash_cuts(out)}

    def touches(self, path: str) -> bool:
        """Whether a stage writes `path`, a folder holding it or something inside it."""
        if path in self.outs or path in self.folders_above:  # written, or a folder some out is inside
            return True
        return any(path[:cut] in self.outs for cut in _slash_cuts(path))  # inside a written folder


def _slash_cuts(path: str) -> list[int]:
    """Where `path` splits at a '/': path[:cut] is each folder above it, as written (`a/b/c` -> `a`, `a/b`)."""
    return [match.start() for match in SLASH.finditer(path)]


SLASH = re.compile("/")


def _written_folders(stages: dict) -> dict[str, str]:
    """{folder: which stage writes there} for every foreach stage's out named per entry (`data/images/${item}`
    -> data/images): a missing path in such a folder has no other source than a stage."""
    folders: dict[str, str] = {}
    for stage, spec in stages.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("do"), dict):
            continue
        for template in _templates(spec["do"].get("outs")):
            prefix = template.split("${", 1)[0]
            if prefix != template and "/" in prefix:
                folder = _normal(prefix.rsplit("/", 1)[0])
                folders.setdefault(folder, f"stage {stage} writes {template} for each entry of {spec.get('foreach')}")
    return folders
