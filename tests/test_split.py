"""split@S: predefined splits kept, seeded hash draw stable per id and close to the fraction."""

import pandas as pd
import pytest
import yaml

from helpers import cli
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
KNOWN_DRAWS = {
    (42, "x"): "c425cf7f0966afc2",
    (42, "diffusiondb-000001"): "0b81b8bf86ba4d4e",
    (7, ""): "70fb8417d44dffa5",
    (0, "é"): "e62ced1159419255",
}


@pytest.mark.parametrize("seed,row_id", sorted(KNOWN_DRAWS))
def test_hash_unit_is_machine_independent(seed, row_id):
    """The draw is the first 8 bytes of sha256(f"{seed}:{id}") (UTF-8) read big-endian over 2**64: the
    same number on every machine, process and Python version, so a row never changes split."""
    expected = int(KNOWN_DRAWS[seed, row_id], 16) / 2**64
    assert hash_unit(seed, row_id) == expected
    assert 0 <= expected < 1


def test_cli_writes_both_splits(tmp_path, monkeypatch, capfd):
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump({"split": {"method": "hash", "validation_fraction": 0.2, "seed": 7}})
    )
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


# --- method shuffle: the team's split_dataset.py, exactly ---------------------------------------------------


def team_split(captions: list, seed: int = 42) -> tuple[list, list]:
    """split_dataset.py (songjein/image-to-prompts-28th-solution @ 196e689), verbatim but for the I/O: the
    module-level random, seeded, shuffling the caption list in file order."""
    import random

    state = random.getstate()
    try:
        captions = list(captions)
        random.seed(seed)
        random.shuffle(captions)
        return captions[: int(len(captions) * 0.95)], captions[int(len(captions) * 0.95) :]
    finally:
        random.setstate(state)


@pytest.mark.parametrize("n", [1, 19, 20, 21, 100, 997, 5_000])
def test_shuffle_split_is_the_teams(n):
    from scripts.split import shuffle_split

    ids = [stable_id("s", i) for i in range(n)]
    train, validation = team_split(ids)
    drawn = shuffle_split(ids, 0.05, 42)
    assert {i for i, s in drawn.items() if s == "train"} == set(train)
    assert {i for i, s in drawn.items() if s == "validation"} == set(validation)


def test_shuffle_follows_generation_order_not_table_order():
    from scripts.split import shuffle_split

    n = 300
    table = rows(n)
    positions = pd.Series(range(n), index=table.index, dtype=float)
    shuffled = table.sample(frac=1, random_state=3)
    chosen = assign_splits(shuffled, 0.05, 42, "shuffle", positions.loc[shuffled.index])
    expected = shuffle_split(table["id"].tolist(), 0.05, 42)
    assert dict(zip(shuffled["id"], chosen)) == expected
    with pytest.raises(DataError, match="no position in the generation list"):
        assign_splits(table, 0.05, 42, "shuffle", positions.where(positions != 7))


def test_shuffle_keeps_predefined_splits_and_shuffles_the_rest():
    table = pd.concat([rows(40), rows(10, "validation")], ignore_index=True)
    table["id"] = [stable_id("p", i) for i in range(50)]
    chosen = assign_splits(table, 0.05, 42, "shuffle", pd.Series(range(50), dtype=float))
    assert (chosen.iloc[40:] == "validation").all()
    _train, validation = team_split(table["id"].iloc[:40].tolist())
    assert set(table["id"][:40][chosen[:40] == "validation"]) == set(validation)


def test_cli_shuffle_reads_the_order_file(tmp_path, monkeypatch, capfd):
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump({"split": {"method": "shuffle", "validation_fraction": 0.05, "seed": 42}})
    )
    listed = rows(120).assign(position=range(120))
    listed.to_parquet(tmp_path / "order.parquet")
    listed.drop(columns=["position"]).sort_values("id").assign(text="p").to_parquet(tmp_path / "in.parquet")
    result = cli(["split", "s", "in.parquet", "out"], tmp_path, monkeypatch, capfd)  # the input's order, then
    assert result.returncode == 0, result.stderr
    by_input_order = pd.read_parquet(tmp_path / "out" / "validation.parquet")
    assert set(by_input_order["id"]) == set(team_split(sorted(listed["id"].tolist()))[1])
    result = cli(["split", "s", "in.parquet", "out", "--order", "order.parquet"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    val = pd.read_parquet(tmp_path / "out" / "validation.parquet")
    assert set(val["id"]) == set(team_split(listed["id"].tolist())[1])
