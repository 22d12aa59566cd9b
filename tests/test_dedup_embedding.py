"""dedup.method embedding (the team's all-MiniLM-L6-v2 cosine dedup), offline with the seeded tiny encoder.

Every expected result is computed here, independently: the encoder's embeddings come from transformers
directly (AutoModel + our own mean pooling), cosines from numpy over all pairs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from helpers import cli
from scripts.dedup import (
    EmbeddingIndex,
    Index,
    build_index,
    dedup_against,
    dedup_self,
    embed,
    keep_mask,
    resolve_params,
)
from scripts.lib import embedding as em
from scripts.lib.errors import DataError

THRESHOLD = 0.9


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> Path:
    from scripts.tiny_encoder import save_tiny_encoder

    out = tmp_path_factory.mktemp("encoder") / "tiny-encoder"
    save_tiny_encoder({}, out)
    return out


@pytest.fixture(scope="module")
def texts(fixtures_dir) -> list[str]:
    """Real prompts, then paraphrase-like copies of some (two words swapped, a word dropped and upper-cased,
    a modifier appended), exact copies, and blank rows."""
    lines = (fixtures_dir / "gpt4-prompts-3k.txt").read_text(encoding="utf-8").splitlines()
    real = [line.strip().removeprefix("- ") for line in lines if line.strip()][:160]
    rng = np.random.default_rng(3)
    variants = []
    for n, i in enumerate(rng.choice(len(real), 36, replace=False)):
        words = real[i].split()
        k = int(rng.integers(len(words) - 1))
        if n % 3 == 0:
            words[k], words[k + 1] = words[k + 1], words[k]
        elif n % 3 == 1:
            del words[k]
            words = [w.upper() for w in words]
        else:
            words.append("highly detailed")
        variants.append(" ".join(words))
    return variants[:16] + real + variants[16:] + real[:4] + ["", "   "]


def _params(encoder_dir, **changes):
    return resolve_params(None, method="embedding", embedding_model=str(encoder_dir), threshold=THRESHOLD, **changes)


def _reference_embeddings(encoder_dir: Path, texts: list[str]) -> np.ndarray:
    """The encoder's own embeddings, without scripts.lib.embedding: transformers + mean pooling + L2 norm."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    max_len = json.loads((encoder_dir / "sentence_bert_config.json").read_text())["max_seq_length"]
    tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
    model = AutoModel.from_pretrained(encoder_dir).eval()
    out = np.zeros((len(texts), model.config.hidden_size))
    with torch.no_grad():
        for i, text in enumerate(texts):  # one text at a time: no padding at all
            if not text.strip():
                continue
            batch = tokenizer([text], truncation=True, max_length=max_len, return_tensors="pt")
            vector = model(**batch).last_hidden_state[0].double().mean(0).numpy()
            out[i] = vector / np.linalg.norm(vector)
    return out


@pytest.fixture(scope="module")
def cosines(encoder_dir, texts) -> np.ndarray:
    e = _reference_embeddings(encoder_dir, texts)
    return e @ e.T


def _pairs(cosines: np.ndarray, threshold: float) -> set[tuple[int, int]]:
    i, j = np.nonzero(np.triu(cosines >= threshold, k=1))
    return set(zip(i.tolist(), j.tolist()))


def test_embeddings_are_mean_pooled_and_unit_length_like_sentence_transformers(encoder_dir, texts, cosines):
    ours = embed(texts, _params(encoder_dir)).astype(np.float64)
    reference = _reference_embeddings(encoder_dir, texts[:40])
    assert np.abs(ours[:40] - reference).max() < 1e-5  # padded batches, longest first: same vectors
    nonblank = np.array([bool(t.strip()) for t in texts])
    assert np.allclose(np.linalg.norm(ours[nonblank], axis=1), 1, atol=1e-6) and not ours[~nonblank].any()
    # the tiny encoder tells paraphrase-like copies from unrelated prompts (what the tests below rely on)
    unrelated = cosines[16:176, 16:176][np.triu_indices(160, 1)]
    assert np.quantile(unrelated, 0.5) < 0.8


def test_keep_first_finds_paraphrases_with_both_properties(encoder_dir, texts, cosines):
    pairs = _pairs(cosines, THRESHOLD)
    near = np.abs(cosines - THRESHOLD)[np.triu_indices(len(texts), 1)]
    assert near.min() > 1e-4, "a pair sits on the threshold: float32 rounding could decide it"
    result = dedup_self(texts, None, _params(encoder_dir))
    keep = result.keep
    assert [(i, j) for i, j in pairs if keep[i] and keep[j]] == []
    for i in np.flatnonzero(~keep):
        d = int(result.duplicate_of[i])
        assert keep[d] and d != i
        assert result.similarity[i] == pytest.approx(cosines[i, d], abs=1e-5) and cosines[i, d] >= THRESHOLD
    # most planted copies go, and they point at their originals; blanks are never duplicates
    assert result.stats["removed"] >= 32 and keep[-2:].all()
    assert result.stats["exact_duplicates"] == 4 and result.stats["measure"] == "cosine"
    assert result.stats["rows_at_top_k"] == 0


def test_none_of_pair_removes_every_row_with_a_near_duplicate(encoder_dir, texts, cosines):
    result = dedup_self(texts, None, _params(encoder_dir, keep="none_of_pair"))
    paired = {i for pair in _pairs(cosines, THRESHOLD) for i in pair}
    assert set(np.flatnonzero(~result.keep).tolist()) == paired
    for i in np.flatnonzero(~result.keep):  # each points at its most similar partner, itself removed
        d = int(result.duplicate_of[i])
        assert not result.keep[d] and cosines[i, d] >= THRESHOLD
        assert cosines[i, d] == pytest.approx(max(cosines[i, j] for j in paired if j != i), abs=1e-5)
    assert result.stats["kept"] == len(texts) - len(paired)


def test_keep_longest_keeps_the_longer_text(encoder_dir, texts, cosines):
    result = dedup_self(texts, [f"id{i:04d}" for i in range(len(texts))], _params(encoder_dir, keep="longest"))
    assert [(i, j) for i, j in _pairs(cosines, THRESHOLD) if result.keep[i] and result.keep[j]] == []
    removed = np.flatnonzero(~result.keep)
    assert len(removed) >= 32
    for i in removed:
        assert len(texts[result.duplicate_of[i]]) >= len(texts[i])
    # the appended-modifier copies are longer than their originals: the copy stays, the original goes
    appended = [
        i for i, t in enumerate(texts) if t.endswith("highly detailed") and t[: -len(" highly detailed")] in texts
    ]
    assert appended and all(result.keep[i] for i in appended)


def test_block_size_and_batch_size_do_not_change_the_result(encoder_dir, texts):
    base = dedup_self(texts, None, _params(encoder_dir))
    for changes in ({"embedding_block": 16}, {"embedding_block": 100, "embedding_batch": 5}):
        other = dedup_self(texts, None, _params(encoder_dir, **changes))
        assert np.array_equal(other.keep, base.keep) and np.array_equal(other.duplicate_of, base.duplicate_of)
        assert np.allclose(other.similarity, base.similarity, atol=1e-6, equal_nan=True)


def test_top_k_is_exact_against_numpy_at_any_block():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(90, 8)).astype(np.float32)
    vectors[10] = vectors[3]  # a tie: the lower index comes first
    sims = vectors.astype(np.float64) @ vectors.T.astype(np.float64)
    np.fill_diagonal(sims, -np.inf)
    for block in (4, 13, 90, 500):
        index, got = em.top_k(vectors, vectors, 5, block, exclude_self=True)
        for row in range(90):
            expected = sorted(range(90), key=lambda j: (-round(sims[row, j], 4), j))[:5]
            assert index[row].tolist() == expected, (block, row)
            assert np.allclose(got[row], sims[row, expected], atol=1e-4)


def test_cross_mode_drops_only_new_rows_near_the_reference(encoder_dir, texts, cosines, tmp_path):
    reference, new = list(range(16, 136)), list(range(0, 16)) + list(range(136, len(texts)))
    params = _params(encoder_dir, keep="none_of_pair")  # keep does not apply to cross mode
    result = dedup_against([texts[i] for i in new], [texts[i] for i in reference], params)
    between = cosines[np.ix_(new, reference)]
    should_go = between.max(axis=1) >= THRESHOLD
    assert np.array_equal(~result.keep, should_go) and should_go.sum() >= 12
    for row in np.flatnonzero(should_go):
        assert result.duplicate_of[row] == int(np.argmax(between[row]))
        assert result.similarity[row] == pytest.approx(between[row].max(), abs=1e-5)
    # the same through keep_mask and a saved index; texts in `new` that are near each other all stay
    assert np.array_equal(
        keep_mask([texts[i] for i in new], params, against=[texts[i] for i in reference]), result.keep
    )
    index = build_index([texts[i] for i in reference], params)
    assert isinstance(index, EmbeddingIndex)
    index.save(tmp_path / "index")
    loaded = Index.load(tmp_path / "index")
    assert isinstance(loaded, EmbeddingIndex)
    assert np.array_equal(loaded.query([texts[i] for i in new]).keep, result.keep)
    with pytest.raises(DataError, match="params differ"):
        dedup_against(["a"], loaded, params.replace(threshold=0.8))


def test_a_missing_model_is_one_line(tmp_path, monkeypatch, capfd):
    with pytest.raises(DataError, match=r"dedup.embedding_model: .*nope: no such folder"):
        dedup_self(
            ["a red car", "a red car!"],
            None,
            resolve_params(None, method="embedding", embedding_model=str(tmp_path / "nope")),
        )
    with pytest.raises(DataError, match="not in the local Hugging Face cache"):
        em.resolve_model("t2i-tests/no-such-encoder")  # local_files_only: never a download
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: cannot load a transformer \(") as caught:
        em.Encoder(str(tmp_path / "empty"), "cpu")
    assert "\n" not in str(caught.value)
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump({"dedup": {"method": "embedding", "embedding_model": "models/none"}})
    )
    (tmp_path / "in.txt").write_text("a red car\na red car!\n", encoding="utf-8")
    run = cli(["dedup-text", "in.txt", "out.jsonl"], tmp_path, monkeypatch, capfd)
    assert run.returncode == 2 and run.stderr.strip().splitlines() == [
        "error: dedup.embedding_model: models/none: no such folder, and not in the local Hugging Face cache "
        "(models are never downloaded here)"
    ]
    assert not (tmp_path / "out.jsonl").exists()


def test_unsupported_pooling_is_one_line(encoder_dir, tmp_path):
    import shutil

    copy = tmp_path / "cls-encoder"
    shutil.copytree(encoder_dir, copy)
    config = json.loads((copy / "1_Pooling" / "config.json").read_text())
    (copy / "1_Pooling" / "config.json").write_text(
        json.dumps({**config, "pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True})
    )
    with pytest.raises(DataError, match=r"1_Pooling/config.json: pooling pooling_mode_cls_token not supported"):
        em.read_spec(copy)


def test_stage_cli_with_embedding_writes_the_same_outputs(encoder_dir, texts, cosines, tmp_path, monkeypatch, capfd):
    ids = [f"{i:016x}" for i in range(len(texts))]
    pq.write_table(pa.table({"id": ids, "text": texts}), tmp_path / "in.parquet")
    dedup = {"method": "embedding", "embedding_model": str(encoder_dir), "threshold": THRESHOLD}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"dedup": dedup}), encoding="utf-8")
    run = cli(["dedup", "s", "in.parquet", "out/s.parquet"], tmp_path, monkeypatch, capfd)
    assert run.returncode == 0, run.stderr
    kept = pq.read_table(tmp_path / "out" / "s.parquet").column("id").to_pylist()
    clusters = pq.read_table(tmp_path / "out" / "s.clusters.parquet").to_pylist()
    report = json.loads((tmp_path / "out" / "s.report.json").read_text())
    assert report["measure"] == "cosine" and report["model"] == str(encoder_dir) and report["kept"] == len(kept)
    assert len(clusters) == report["removed"] == len(texts) - len(kept) >= 32
    position = {rid: i for i, rid in enumerate(ids)}
    for row in clusters:
        assert row["duplicate_of"] in kept and row["id"] not in kept
        assert row["jaccard"] == pytest.approx(cosines[position[row["id"]], position[row["duplicate_of"]]], abs=2e-6)
    assert (tmp_path / "out" / "s.preview.html").exists()


def test_tiny_encoder_is_the_same_bytes_on_every_build(encoder_dir, tmp_path):
    from scripts.tiny_encoder import save_tiny_encoder

    save_tiny_encoder({}, tmp_path / "again")
    files = sorted(p.relative_to(encoder_dir) for p in encoder_dir.rglob("*") if p.is_file())
    assert {
        "modules.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
        "model.safetensors",
        "tokenizer.json",
        "config.json",
    } <= {str(f) for f in files}
    for name in files:
        assert (tmp_path / "again" / name).read_bytes() == (encoder_dir / name).read_bytes(), name
    save_tiny_encoder({"seed": 1}, tmp_path / "other")
    assert (tmp_path / "other" / "model.safetensors").read_bytes() != (encoder_dir / "model.safetensors").read_bytes()
