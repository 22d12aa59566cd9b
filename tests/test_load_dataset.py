"""`datasets.load_dataset(<release folder>)` loads a release in every export layout with an image feature
and a text feature (issue 16, acceptance 2), offline, with its cache in a temp folder. Each release is
built by the real `release` stage (in this process) from splits whose images mix PNG and JPEG - the
case where a WebDataset export had two image columns and a SimpleTuner one had more .txt than images."""

from __future__ import annotations

import copy
import io
import json

import pandas as pd
import pytest
import yaml
from PIL import Image

from helpers import REPO, cli
from scripts.lib.io import stable_id
from scripts.lib.tables import write_parquet

SOURCE = "chatgpt"  # a source of params.yaml; its images folder is data/images/chatgpt
TEXTS = {
    "train": [
        f"a {c} cat sitting on a {t} chair"
        for c, t in zip(["red", "blue", "green", "grey", "black"], ["wooden", "plastic", "metal", "velvet", "wicker"])
    ],
    "validation": ["an owl at night in the rain", "a lighthouse in a storm"],
}


def small(split: str, i: int) -> tuple[int, int]:
    return 24 + 8 * i, 16 + 4 * i


def make_workspace(root, export, size=small) -> None:
    """params.yaml (this repo's, one release r1 with `export`) and data/splits/chatgpt/{train,validation}.parquet
    whose rows alternate real PNG and JPEG images of different sizes (`size(split, i)`)."""
    params = copy.deepcopy(yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8")))
    params["releases"] = {
        "r1": {
            "components": [
                {"source": SOURCE, "split": "train", "into": "train"},
                {"source": SOURCE, "split": "validation", "into": "validation"},
            ],
            "export": export,
        }
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    images = root / "data" / "images" / SOURCE
    images.mkdir(parents=True)
    for split, texts in TEXTS.items():
        records = []
        for i, text in enumerate(texts):
            row_id = stable_id(SOURCE, f"{split}{i}")
            kind = ("PNG", "png") if i % 2 == 0 else ("JPEG", "jpg")
            wh = size(split, i)
            Image.new("RGB", wh, (40 * i % 256, 120, 200)).save(images / f"{row_id}.{kind[1]}", format=kind[0])
            records.append(
                {
                    "id": row_id,
                    "source": SOURCE,
                    "split": split,
                    "text": text,
                    "orig_text": text.upper(),
                    "image": f"data/images/{SOURCE}/{row_id}.{kind[1]}",
                    "width": wh[0],
                    "height": wh[1],
                }
            )
        table = pd.DataFrame(records).astype({"width": "Int64", "height": "Int64"})
        write_parquet(table, root / "data" / "splits" / SOURCE / f"{split}.parquet")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network and no cache outside the test's folder."""
    for name, value in (("HF_DATASETS_OFFLINE", "1"), ("HF_HUB_OFFLINE", "1"), ("HF_HOME", str(tmp_path / "hf-home"))):
        monkeypatch.setenv(name, value)
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    return tmp_path / "hf-cache"


# export -> (image column, text column): webdataset columns are named by member extension
LAYOUTS = {
    "imagefolder": ("imagefolder", "image", "text"),
    "webdataset": ({"format": "webdataset", "shard_size": 3}, "png", "txt"),
    "webdataset-jpg": ({"format": "webdataset", "shard_size": 3, "image_format": "jpg"}, "jpg", "txt"),
    "simpletuner": ("simpletuner", "image", "text"),
    "parquet": ({"format": "parquet", "shard_size": 3}, "image", "text"),
    # these images are 16-32 px: at any base resolution (64 and up) the card's rules upsample or drop them
    "bucketed": ({"format": "bucketed", "base_resolution": 64, "too_small_policy": "upsample"}, "jpg", "txt"),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_load_dataset_reads_every_export_layout(tmp_path, monkeypatch, capfd, offline, layout):
    import datasets

    export, image_column, text_column = LAYOUTS[layout]
    root = tmp_path / "ws"
    root.mkdir()
    make_workspace(root, export)
    result = cli(["release", "r1", "data/splits", "data/releases/r1"], root, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr

    loaded = datasets.load_dataset(str(root / "data" / "releases" / "r1"), cache_dir=str(offline))
    assert {split: len(part) for split, part in loaded.items()} == {s: len(t) for s, t in TEXTS.items()}
    stats = json.loads((root / "data" / "releases" / "r1" / "stats.json").read_text())
    assert {split: len(part) for split, part in loaded.items()} == {s: stats["rows"][s] for s in TEXTS}
    rows = pd.read_parquet(root / "data" / "releases" / "r1" / "rows.parquet").set_index("id")
    for split, part in loaded.items():
        assert isinstance(part.features[image_column], datasets.Image)
        assert part.features[text_column].dtype == "string"
        texts = sorted(t.strip() for t in part[text_column])  # webdataset's .txt ends with a newline
        assert texts == sorted(TEXTS[split])
        for sample in part:
            image = sample[image_column]
            text = sample[text_column].strip()
            row = rows[(rows["text"] == text) & (rows["split"] == split)].iloc[0]
            if layout == "bucketed":  # resized into its bucket: 64 px buckets at base 64
                assert min(image.size) == 64
                continue
            assert image.size == (row["width"], row["height"])
            source = Image.open(next((root / "data" / "images" / SOURCE).glob(f"{row.name}.*")))
            if image_column != "jpg" or source.format == "JPEG":
                # every layout keeps each image's pixels, but a jpg webdataset's PNGs (re-encoded)
                assert image.convert("RGB").tobytes() == source.convert("RGB").tobytes()


def test_simpletuner_release_parquet_and_backend_agree_with_the_images(tmp_path, monkeypatch, capfd):
    from test_release_exports import simpletuner_keeps

    root = tmp_path / "ws"
    root.mkdir()
    make_workspace(root, "simpletuner")
    assert cli(["release", "r1", "data/splits", "data/releases/r1"], root, monkeypatch, capfd).returncode == 0
    release = root / "data" / "releases" / "r1"
    for split in TEXTS:
        ((entry, _),) = [json.loads((release / split / "multidatabackend.json").read_text())]
        table = pd.read_parquet(release / entry["parquet"]["path"])  # paths relative to the release folder
        assert sorted(table["caption"]) == sorted(TEXTS[split])
        for row in table.itertuples():
            image = release / entry["instance_data_dir"] / row.filename
            with Image.open(image) as opened:
                assert opened.size == (row.width, row.height)
                assert simpletuner_keeps(entry, *opened.size)  # SimpleTuner's own size rule drops none
            assert image.with_suffix(".txt").read_text(encoding="utf-8") == row.caption
    card = (release / "README.md").read_text(encoding="utf-8")
    assert "train/metadata.jsonl" in card and "train/**" not in card
    with Image.open(io.BytesIO((release / "preview.jpg").read_bytes())) as sheet:
        assert sheet.format == "JPEG"

    # the config SimpleTuner is given: absolute paths, caches outside the release
    out = tmp_path / "backend.json"
    result = cli(
        ["simpletuner-config", "data/releases/r1/train", out, "--cache-dir", tmp_path / "st-cache"],
        root,
        monkeypatch,
        capfd,
    )
    assert result.returncode == 0, result.stderr
    entry, text_entry = json.loads(out.read_text())
    assert entry["cache_dir_vae"].startswith(str(tmp_path / "st-cache")) and text_entry["cache_dir"].startswith(
        str(tmp_path / "st-cache")
    )
    filenames = set(pd.read_parquet(entry["parquet"]["path"])["filename"])
    assert (
        simpletuner_identifiers(entry["instance_data_dir"])
        == filenames
        == set(pd.read_parquet(release / "train" / "simpletuner.parquet")["filename"])
    )
    assert not simpletuner_identifiers("data/releases/r1/train", cwd=root) & filenames  # why relative paths will not do
    inside = cli(["simpletuner-config", "data/releases/r1/train", "data/releases/r1/x.json"], root, monkeypatch, capfd)
    assert inside.returncode == 2 and "inside the release folder" in inside.stderr

    # a rerun replaces its own config; once the user tunes it (the file SimpleTuner is given), it is theirs
    again = ["simpletuner-config", "data/releases/r1/train", out, "--cache-dir", tmp_path / "st-cache"]
    assert cli(again, root, monkeypatch, capfd).returncode == 0
    tuned = out.read_text().replace('"resolution": ', '"resolution": 2048, "was": ', 1)
    out.write_text(tuned)
    refused = cli(again, root, monkeypatch, capfd)
    assert refused.returncode == 2 and "changed since" in refused.stderr and out.read_text() == tuned


def simpletuner_identifiers(instance_data_dir: str, cwd=None) -> set[str]:
    """What SimpleTuner's parquet metadata backend looks up for each image (bghira/SimpleTuner,
    simpletuner/helpers/data_backend/local.py list_files: `str(path.absolute())` of an rglob under
    instance_data_dir; helpers/metadata/backends/parquet.py: `filename.replace(instance_data_dir, "")`,
    a leading "/" dropped, the extension kept with identifier_includes_extension)."""
    import os
    from pathlib import Path

    root = Path(cwd or os.getcwd())
    folder = Path(instance_data_dir) if Path(instance_data_dir).is_absolute() else root / instance_data_dir
    listed = [str(p.absolute()) for ext in ("png", "jpg", "jpeg", "webp") for p in folder.rglob(f"*.{ext}")]
    return {name.replace(instance_data_dir, "").removeprefix("/") for name in listed}


def test_publish_reads_rows_parquet_so_a_shard_release_publishes_too(tmp_path, monkeypatch, capfd, offline):
    import datasets

    root = tmp_path / "ws"
    root.mkdir()
    make_workspace(root, {"format": "webdataset", "shard_size": 3})
    assert cli(["release", "r1", "data/splits", "data/releases/r1"], root, monkeypatch, capfd).returncode == 0
    result = cli(["publish", "r1", "--repo-id", "me/r1", "--dry-run", "--out", "hub"], root, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    loaded = datasets.load_dataset("parquet", data_dir=str(root / "hub" / "data"), cache_dir=str(offline))
    rows = pd.read_parquet(root / "data" / "releases" / "r1" / "rows.parquet").set_index("id")
    for split, part in loaded.items():
        assert isinstance(part.features["image"], datasets.Image) and sorted(part["text"]) == sorted(TEXTS[split])
        for sample in part:
            source = Image.open(next((root / "data" / "images" / SOURCE).glob(f"{sample['id']}.*")))
            assert sample["image"].convert("RGB").tobytes() == source.convert("RGB").tobytes()
            assert rows.at[sample["id"], "image"].startswith(f"{split}/shard-")


def test_a_bucketed_release_counts_what_it_exported(tmp_path, monkeypatch, capfd, offline):
    """Rows the bucketed layout drops (smaller than their bucket) are removed rows with a reason, so
    stats.json, the card, rows.parquet and what datasets loads agree."""
    import datasets

    def mixed(split, i):  # odd train rows and every validation row cover a 64 px bucket; even train rows do not
        return (128, 80) if split == "validation" or i % 2 else (24, 16)

    root = tmp_path / "ws"
    root.mkdir()
    make_workspace(root, {"format": "bucketed", "base_resolution": 64}, size=mixed)
    result = cli(["release", "r1", "data/splits", "data/releases/r1"], root, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    release = root / "data" / "releases" / "r1"
    stats = json.loads((release / "stats.json").read_text())
    assert stats["rows"] == {"train": 2, "validation": 2, "total": 4}
    assert stats["removed"] == {"export:too_small": 3, "total": 3}
    manifest = json.loads((release / "train" / "manifest.json").read_text())
    assert manifest["export_summary"]["images_exported"] == 2 and manifest["export_summary"]["skipped_too_small"] == 3
    removed = pd.read_parquet(release / "removed.parquet")
    assert set(removed["reason"]) == {"export:too_small"} and len(removed) == 3
    assert len(pd.read_parquet(release / "rows.parquet")) == 4
    card = (release / "README.md").read_text(encoding="utf-8")
    assert "| train | 2 |" in card and "| validation | 2 |" in card and "`export:too_small`: 3" in card
    loaded = datasets.load_dataset(str(release), cache_dir=str(offline))
    assert {split: len(part) for split, part in loaded.items()} == {"train": 2, "validation": 2}


def test_an_export_that_keeps_no_image_is_an_error_unless_the_recipe_allows_it(tmp_path, monkeypatch, capfd):
    root = tmp_path / "ws"
    root.mkdir()
    make_workspace(root, {"format": "bucketed", "base_resolution": 512})
    result = cli(["release", "r1", "data/splits", "data/releases/r1"], root, monkeypatch, capfd)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.stderr
    assert "releases.r1.export: the bucketed export kept 0 of 5 train rows (5 too_small" in errors[0]
    assert "base_resolution" in result.stderr and not (root / "data" / "releases" / "r1").exists()

    (root / "again").mkdir()
    make_workspace(root / "again", {"format": "bucketed", "base_resolution": 512, "allow_empty": True})
    result = cli(["release", "r1", "data/splits", "data/releases/r1"], root / "again", monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    stats = json.loads((root / "again" / "data" / "releases" / "r1" / "stats.json").read_text())
    assert stats["rows"]["total"] == 0 and stats["removed"]["export:too_small"] == 7


@pytest.mark.slow
def test_every_export_of_the_default_build_loads_with_the_row_count_of_its_stats(
    history, tmp_path, monkeypatch, capfd, offline
):
    """The default build's images (the tiny model's 64x64 renders) in every layout, loaded by its client:
    datasets.load_dataset for each, the webdataset library for the tar layouts, SimpleTuner's size rule."""
    import datasets
    import webdataset as wds
    from test_release_exports import simpletuner_keeps

    from helpers import work_copy

    repo = work_copy(history.repo, tmp_path / "repo")
    params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    layouts = {
        **{k: v[0] for k, v in LAYOUTS.items() if k != "bucketed"},
        "bucketed": {"format": "bucketed", "base_resolution": 64},
    }  # the fast preset renders 64x64
    components = [
        {"source": "diffusiondb", "split": "train", "into": "train"},
        {"source": "diffusiondb", "split": "validation", "into": "validation"},
    ]
    params["releases"] = {
        f"x-{layout}": {"components": [dict(c) for c in components], "export": export}
        for layout, export in layouts.items()
    }  # a copy each: one shared list would be dumped as a YAML alias, which params.yaml refuses
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    for layout in layouts:
        release = repo / "data" / "releases" / f"x-{layout}"
        result = cli(["release", f"x-{layout}", "data/splits", str(release)], repo, monkeypatch, capfd)
        assert result.returncode == 0, (layout, result.stderr)
        stats = json.loads((release / "stats.json").read_text())
        assert stats["rows"]["train"] > 0 and stats["rows"]["validation"] > 0, layout
        loaded = datasets.load_dataset(str(release), cache_dir=str(offline / layout))
        assert {s: len(part) for s, part in loaded.items()} == {s: stats["rows"][s] for s in ("train", "validation")}, (
            layout
        )
        if layout.startswith("webdataset") or layout == "bucketed":
            for split in ("train", "validation"):
                shards = sorted(str(p) for p in (release / split).rglob("*.tar"))
                assert sum(1 for _ in wds.WebDataset(shards, shardshuffle=False)) == stats["rows"][split], layout
        if layout == "simpletuner":
            for split in ("train", "validation"):
                entry = json.loads((release / split / "multidatabackend.json").read_text())[0]
                table = pd.read_parquet(release / entry["parquet"]["path"])
                assert len(table) == stats["rows"][split]
                assert all(simpletuner_keeps(entry, w, h) for w, h in zip(table["width"], table["height"]))


def test_release_from_compose_output_is_byte_identical_to_one_composed_in_process(tmp_path, monkeypatch, capfd):
    """dvc.yaml runs compose@V then release@V --composed; by hand, release composes itself: same bytes."""
    import hashlib

    root = tmp_path / "ws"
    root.mkdir()
    make_workspace(root, {"format": "webdataset", "shard_size": 3})
    assert cli(["compose", "r1", "data/splits", "data/compose/r1"], root, monkeypatch, capfd).returncode == 0
    staged = cli(
        ["release", "r1", "data/splits", "data/releases/a", "--composed", "data/compose/r1"], root, monkeypatch, capfd
    )
    assert staged.returncode == 0, staged.stderr
    assert cli(["release", "r1", "data/splits", "data/releases/b"], root, monkeypatch, capfd).returncode == 0

    def digests(folder):
        return {
            p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        }

    a, b = digests(root / "data" / "releases" / "a"), digests(root / "data" / "releases" / "b")
    assert a == b and "train/shard-000000.tar" in a
