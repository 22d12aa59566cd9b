"""`python -m scripts simpletuner`: the DALL-E-3 shards of data/raw compile to SimpleTuner's parquet."""
import pandas as pd

from conftest import REPO, cli


def test_cli_compiles_the_sample_shards_with_txt_captions(tmp_path, monkeypatch, capfd):
    out = tmp_path / "st.parquet"
    result = cli(["simpletuner", "data/raw/dalle3", out, "--caption-field", "long_caption", "--txt-dir", tmp_path / "txt"],
                 REPO, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    table = pd.read_parquet(out)
    assert list(table.columns) == ["width", "height", "caption", "filename"]
    assert "skipped: missing_width" in result.stdout and len(table) > 0
    for row in table.itertuples():
        stem = row.filename.rsplit(".", 1)[0]
        assert (tmp_path / "txt" / f"{stem}.txt").read_text(encoding="utf-8").strip() == row.caption.strip()


def test_cli_names_a_missing_source_in_one_line(tmp_path, monkeypatch, capfd):
    result = cli(["simpletuner", "data/raw/absent", tmp_path / "x.parquet"], REPO, monkeypatch, capfd)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "data/raw/absent" in result.stderr
    assert not (tmp_path / "x.parquet").exists()
