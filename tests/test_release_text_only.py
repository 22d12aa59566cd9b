"""A prompt dataset through the pipeline: a `text_only` source (no images) goes ingest -> clean -> dedup
-> prefilter -> captions -> split -> a release of prompts (`export: prompts`: parquet + card), each by its
real command; captions@S passes its rows without an image, and an image layout refuses it in one line."""

from __future__ import annotations

import copy

import pandas as pd
import yaml

from helpers import REPO, cli

PROMPTS = [
    f"a {colour} {thing} on a hill at dawn, oil painting"
    for colour in ("red", "blue", "green", "amber")
    for thing in ("castle", "tower", "barn", "windmill", "lighthouse")
]


def workspace(root, export="prompts"):
    params = copy.deepcopy(yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8")))
    params["sources"] = {
        "notes": {
            "kind": "text",
            "path": "data/raw/notes",
            "images": "data/raw/notes",
            "text_only": True,
            "clean": False,
        }
    }
    params["releases"] = {"p1": {"components": [{"source": "notes", "split": "all", "into": "same"}], "export": export}}
    params["generate"]["sources"] = []
    (root / "data" / "raw" / "notes").mkdir(parents=True)
    (root / "data" / "raw" / "notes" / "prompts.txt").write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def build(root, monkeypatch, capfd):
    steps = [
        ["ingest", "notes", "data/prompts/notes.parquet"],
        ["clean", "notes", "data/prompts/notes.parquet", "data/clean/notes.parquet"],
        ["dedup", "notes", "data/clean/notes.parquet", "data/dedup/notes.parquet"],
        ["prefilter", "notes", "data/dedup/notes.parquet", "data/prefilter/notes.parquet"],
        ["captions", "notes", "data/prefilter/notes.parquet", "data/raw/notes", "data/captions/notes.parquet"],
        [
            "split",
            "notes",
            "data/captions/notes.parquet",
            "data/splits/notes",
            "--order",
            "data/prefilter/notes.parquet",
        ],
    ]
    for argv in steps:
        result = cli(argv, root, monkeypatch, capfd)
        assert result.returncode == 0, (argv[0], result.stderr)
    return cli(["release", "p1", "data/splits", "data/releases/p1"], root, monkeypatch, capfd)


def test_a_text_only_source_becomes_a_release_of_prompts(tmp_path, monkeypatch, capfd):
    import datasets

    workspace(tmp_path)
    result = build(tmp_path, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    release = tmp_path / "data" / "releases" / "p1"
    captions = pd.read_parquet(tmp_path / "data" / "captions" / "notes.parquet")
    assert captions["image"].isna().all() and len(captions) > 0
    kept = pd.concat([pd.read_parquet(release / s / "prompts.parquet") for s in ("train", "validation")])
    assert list(kept.columns) == ["id", "source", "text", "orig_text"] and set(kept["text"]) <= set(PROMPTS)
    loaded = datasets.load_dataset(str(release), cache_dir=str(tmp_path / "hf"))
    assert sum(len(part) for part in loaded.values()) == len(kept) == len(captions)
    card = (release / "README.md").read_text(encoding="utf-8")
    assert "text only" in card and "## Images" not in card and "- text-to-image" in card
    assert (release / "preview.jpg").is_file()


def test_an_image_layout_refuses_a_text_only_source_in_one_line(tmp_path, monkeypatch, capfd):
    workspace(tmp_path, export="imagefolder")
    result = build(tmp_path, monkeypatch, capfd)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "source 'notes' is text_only (no images): its release needs export: prompts" in result.stderr
