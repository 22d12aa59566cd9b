"""split@S: predefined splits kept, seeded hash draw stable per id and close to the fraction."""
import pandas as pd
import pytest
import yaml

from conftest import cli
from scripts.lib.errors import DataError
from scripts.lib.io import stable_id
from scripts.split import assign_splits, hash_unit


def rows(n, split=None):
    return pd.DataFrame({"id": [stable_id("s", i) for i in range(n)], "split": [split] * n})


def test_fraction_is_close_to_param():
    chosen = assign_splits(rows(20_000), 0.05, 42)
    share = (chosen == "validation").mean()
    assert 0.045 < share < 0.055


def test_a_rows_split_depends_only_on_its_id():
    small = assign_splits(rows(500), 0.05, 42)
    large = assign_splits(rows(5_000), 0.05, 42)
    assert (large.iloc[:500].values == small.values).all()


def test_seed_changes_the_draw():
    assert not (assign_splits(rows(2_000), 0.5, 1).values == assign_splits(rows(2_000), 0.5, 2).values).all()


def test_predefined_split_is_kept():
    table = pd.concat([rows(50, "train"), rows(50, "validation")], ignore_index=True)
    table["id"] = [stable_id("p", i) for i in range(100)]
    chosen = assign_splits(table, 0.5, 42)
    assert chosen.tolist() == ["train"] * 50 + ["validation"] * 50


def test_unknown_predefined_split_is_an_error():
    with pytest.raises(DataError, match="unknown split 'eval'"):
        assign_splits(rows(3, "eval"), 0.05, 42)


# sha256 prefixes of b"seed:id" written by coreutils' `printf '%s' "$s" | sha256sum | cut -c1-16`: an
# implementation independent of Python's hashlib, and of any process (Python's hash() is salted per process)
KNOWN_DRAWS = {(42, "x"): "c425cf7f0966afc2", (42, "diffusiondb-000001"): "0b81b8bf86ba4d4e",
               (7, ""): "70fb8417d44dffa5", (0, "é"): "e62ced1159419255"}


@pytest.mark.parametrize("seed,row_id", sorted(KNOWN_DRAWS))
def test_hash_unit_is_machine_independent(seed, row_id):
    """The draw is the first 8 bytes of sha256(f"{seed}:{id}") (UTF-8) read big-endian over 2**64: the
    same number on every machine, process and Python version, so a row never changes split."""
    expected = int(KNOWN_DRAWS[seed, row_id], 16) / 2**64
    assert hash_unit(seed, row_id) == expected
    assert 0 <= expected < 1


def test_cli_writes_both_splits(tmp_path, monkeypatch, capfd):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"split": {"validation_fraction": 0.2, "seed": 7}}))
    table = rows(200)
    table["text"] = "a prompt"
    table.to_parquet(tmp_path / "in.parquet")
    result = cli(["split", "s", "in.parquet", "out"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    train = pd.read_parquet(tmp_path / "out" / "train.parquet")
    val = pd.read_parquet(tmp_path / "out" / "validation.parquet")
    assert len(train) + len(val) == 200 and 20 <= len(val) <= 60
    assert set(train["split"]) == {"train"} and set(val["split"]) == {"validation"}
    assert not set(train["id"]) & set(val["id"])
