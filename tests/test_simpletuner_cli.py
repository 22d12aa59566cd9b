"""`python -m scripts simpletuner`: DALL-E-3 shards compile to SimpleTuner's DALL-E-3 preset - the parquet
(`filename` from the json's `image_name`), each image with its `.txt` beside it, and a
multidatabackend.json whose entry points at both."""

import io
import json

import pandas as pd
from PIL import Image

from helpers import REPO, cli, write_tar


def png(width: int, height: int, colour=(10, 120, 200)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def record(image_name, **fields) -> bytes:
    base = {
        "image_name": image_name,
        "short_caption": f"short {image_name}",
        "long_caption": f"long {image_name}",
        "width": 12,
        "height": 8,
    }
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not None}).encode()


def test_cli_compiles_the_sample_shards_with_txt_captions(tmp_path, monkeypatch, capfd):
    out = tmp_path / "st.parquet"
    result = cli(
        ["simpletuner", "data/raw/dalle3", out, "--caption-field", "long_caption", "--txt-dir", tmp_path / "txt"],
        REPO,
        monkeypatch,
        capfd,
    )
    assert result.returncode == 0, result.stderr
    table = pd.read_parquet(out)
    assert list(table.columns) == ["width", "height", "caption", "filename"]
    assert "skipped: missing_width" in result.stdout and len(table) > 0
    for row in table.itertuples():
        stem = row.filename.rsplit(".", 1)[0]
        assert (tmp_path / "txt" / f"{stem}.txt").read_text(encoding="utf-8").strip() == row.caption.strip()


def test_data_dir_holds_each_image_under_its_image_name_with_its_caption_beside(tmp_path, monkeypatch, capfd):
    shards = tmp_path / "dalle3"
    # tar members are named by index; the json's image_name is the name SimpleTuner must see
    write_tar(
        shards / "data-000000.tar",
        [
            ("000.png", png(12, 8)),
            ("000.json", record("sunset-over-sea.png")),
            ("001.png", png(12, 8, (200, 0, 0))),
            ("001.json", record("no-width.png", width=None)),
            ("002.png", png(12, 8, (0, 200, 0))),
            ("002.json", record("../escape.png")),
            ("003.png", png(12, 8, (0, 0, 200))),
            ("003.json", record("sunset-over-sea.png")),  # a second record of that name
            ("005.png", png(12, 8)),
            ("005.json", record("blank.png", short_caption="  ")),  # SimpleTuner refuses ""
        ],
    )
    write_tar(
        shards / "data-000001.tar",
        [("004.png", png(6, 9, (9, 9, 9))), ("004.json", record("sub/owl.png", width=6, height=9))],
    )
    out = tmp_path / "dalle3.parquet"
    result = cli(["simpletuner", shards, out, "--data-dir", tmp_path / "data"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    assert "skipped: bad_image_name 1, duplicate_image_name 1, empty_caption 1, missing_width 1" in result.stdout

    table = pd.read_parquet(out)
    assert table.to_dict("records") == [
        {"width": 12, "height": 8, "caption": "short sunset-over-sea.png", "filename": "sunset-over-sea.png"},
        {"width": 6, "height": 9, "caption": "short sub/owl.png", "filename": "sub/owl.png"},
    ]
    data = tmp_path / "data"
    assert Image.open(data / "sunset-over-sea.png").getpixel((0, 0)) == (10, 120, 200)  # the first record's image
    assert (data / "sunset-over-sea.txt").read_text(encoding="utf-8") == "short sunset-over-sea.png"
    assert (data / "sub" / "owl.txt").read_text(encoding="utf-8") == "short sub/owl.png"
    assert not (tmp_path / "escape.png").exists() and not (data / "000.png").exists()

    image_entry, text_entry = json.loads((tmp_path / "multidatabackend.json").read_text())
    assert image_entry["instance_data_dir"] == str(data.resolve())
    assert image_entry["caption_strategy"] == "textfile" and image_entry["metadata_backend"] == "parquet"
    assert image_entry["parquet"]["path"] == str(out.resolve())
    assert image_entry["parquet"]["identifier_includes_extension"] is True
    assert {
        image_entry["parquet"][k] for k in ("caption_column", "filename_column", "width_column", "height_column")
    } == set(table.columns)
    for row in table.itertuples():  # what SimpleTuner's parquet backend looks up: the path under instance_data_dir
        image = data / row.filename
        assert Image.open(image).size == (row.width, row.height)
        assert image.with_suffix(".txt").read_text(encoding="utf-8") == row.caption
    assert text_entry["dataset_type"] == "text_embeds" and text_entry["default"] is True
    from test_load_dataset import simpletuner_identifiers

    assert simpletuner_identifiers(image_entry["instance_data_dir"]) == set(table["filename"])


def test_cli_names_a_missing_source_in_one_line(tmp_path, monkeypatch, capfd):
    result = cli(["simpletuner", "data/raw/absent", tmp_path / "x.parquet"], REPO, monkeypatch, capfd)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "data/raw/absent" in result.stderr
    assert not (tmp_path / "x.parquet").exists()


def test_fail_policy_leaves_no_output_at_all(tmp_path, monkeypatch, capfd):
    shards = tmp_path / "dalle3"
    write_tar(
        shards / "data-000000.tar",
        [("000.png", png(12, 8)), ("000.json", record("a.png")), ("001.png", png(12, 8)), ("001.json", record("b"))],
    )  # no extension
    result = cli(
        ["simpletuner", shards, tmp_path / "o.parquet", "--data-dir", tmp_path / "data", "--on-error", "fail"],
        tmp_path,
        monkeypatch,
        capfd,
    )
    assert result.returncode == 2 and "sample '001'" in result.stderr and "image_name 'b'" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dalle3"]
