"""dedup@S: MinHash-LSH near-duplicate removal, checked against brute force on real prompts."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scripts.dedup import DedupParams, Index, banding, build_index, dedup_against, dedup_self, near_duplicate_mask
from scripts.lib import minhash as mh
from scripts.lib.errors import DataError
from scripts.lib.params import Dedup, Runtime, parse

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


# --- real prompts with planted near-duplicates ---------------------------------------------------


def _real_prompts() -> list[str]:
    gpt4 = FIXTURES / "gpt4-prompts-3k.txt"
    openprompts = FIXTURES / "openprompts-1k.csv"
    texts = [line.strip().removeprefix("- ") for line in gpt4.read_text(encoding="utf-8").splitlines() if line.strip()]
    with openprompts.open(encoding="utf-8", newline="") as f:
        texts += [row["prompt"] for row in csv.DictReader(f)]
    return texts


def _plant(texts: list[str], count: int, seed: int) -> list[str]:
    """Near-duplicates of random rows: a word dropped or changed, text appended, case/punctuation."""
    rng = np.random.default_rng(seed)
    planted = []
    for i in rng.choice(len(texts), count, replace=False):
        words = texts[i].split()
        kind = i % 4
        k = int(rng.integers(len(words)))
        if kind == 0 and len(words) > 1:
            del words[k]
        elif kind == 1:
            words[k] = words[k] + "s"
        elif kind == 2:
            words.append("highly detailed")
        else:
            words = [w.upper() + "!" for w in words]
        planted.append(" ".join(words))
    return planted


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    texts = _real_prompts()
    planted = _plant(texts, 600, seed=5)
    # planted rows interleaved so "first" is not simply "original before copy"
    return planted[:300] + texts + planted[300:] + ["", "!!!", "cat", "Cat.", "red car", "blue sky"]


def _sets(texts, unit="word", ngram=3) -> list[set[int]]:
    sh = mh.shingle_hashes(texts, unit, ngram)
    h, o = sh.hashes.tolist(), sh.offsets.tolist()
    return [set(h[o[i] : o[i + 1]]) for i in range(len(texts))]


def _jaccard(a: set, b: set) -> float:
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def _brute_force_pairs(sets: list[set[int]], threshold: float) -> set[tuple[int, int]]:
    """EVERY pair with Jaccard >= threshold (exact: all pairs sharing a shingle are counted)."""
    postings = defaultdict(list)
    for i, s in enumerate(sets):
        for h in s:
            postings[h].append(i)
    pairs = set()
    for i, s in enumerate(sets):
        shared = defaultdict(int)
        for h in s:
            for j in postings[h]:
                if j > i:
                    shared[j] += 1
        for j, inter in shared.items():
            if inter / (len(s) + len(sets[j]) - inter) >= threshold:
                pairs.add((i, j))
    return pairs


def _check_properties(result, sets, pairs, threshold):
    keep = result.keep
    kept_pairs = [(i, j) for i, j in pairs if keep[i] and keep[j]]
    assert kept_pairs == [], f"kept rows that are near-duplicates: {kept_pairs[:5]}"
    for i in np.nonzero(~keep)[0]:
        d = int(result.duplicate_of[i])
        assert keep[d], f"row {i} points at removed row {d}"
        j = _jaccard(sets[i], sets[d])
        assert j >= threshold and result.similarity[i] == pytest.approx(j, abs=1e-12)
    assert (result.duplicate_of[keep] == -1).all()


# --- acceptance 1: both properties, brute force on thousands of real prompts --------------------


@pytest.mark.parametrize("threshold,keep", [(0.7, "first"), (0.8, "longest"), (0.5, "first")])
def test_no_kept_near_duplicates_and_every_removed_row_points_at_a_kept_partner(prompts, threshold, keep):
    params = DedupParams(threshold=threshold, keep=keep)
    ids = [f"id{i:05d}" for i in range(len(prompts))]
    result = dedup_self(prompts, ids, params)
    sets = _sets(prompts)
    pairs = _brute_force_pairs(sets, threshold)
    assert len(pairs) > 400  # the planted rows are there
    _check_properties(result, sets, pairs, threshold)
    assert result.stats["removed"] == int((~result.keep).sum()) > 350
    assert result.stats["bands"] * result.stats["rows"] <= 128


def test_char_ngrams_keep_both_properties(prompts):
    params = DedupParams(threshold=0.8, unit="char", ngram=5)
    texts = prompts[:1500]
    result = dedup_self(texts, None, params)
    sets = _sets(texts, "char", 5)
    _check_properties(result, sets, _brute_force_pairs(sets, 0.8), 0.8)


def test_chains_do_not_remove_rows_without_a_kept_partner():
    # a~b and b~c at 0.6 but a and c share less: union-find would drop c as a "duplicate" of a
    a = " ".join(f"w{i}" for i in range(1, 11))  # shingles start at w1..w8
    b = " ".join(f"w{i}" for i in range(1, 13))  # w1..w10: J(a, b) = 8/10
    c = " ".join(f"w{i}" for i in range(3, 15))  # w3..w12: J(b, c) = 8/12, J(a, c) = 6/12
    sets = _sets([a, b, c])
    assert _jaccard(sets[0], sets[1]) >= 0.6 and _jaccard(sets[1], sets[2]) >= 0.6 > _jaccard(sets[0], sets[2])
    result = dedup_self([a, b, c], None, DedupParams(threshold=0.6))
    assert result.keep.tolist() == [True, False, True]
    assert result.duplicate_of.tolist() == [-1, 0, -1]
    assert result.stats["clusters"] == 1 and result.stats["largest_cluster"] == 3


# --- acceptance 3: higher threshold keeps more ----------------------------------------------------


def test_higher_threshold_keeps_at_least_as_many_rows(prompts):
    kept = [
        int(dedup_self(prompts, None, DedupParams(threshold=t)).keep.sum()) for t in (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    ]
    assert kept == sorted(kept) and kept[0] < kept[-1], kept


# --- shingling contract --------------------------------------------------------------------------


def test_shingles_are_lowercase_word_trigrams_with_one_shingle_for_short_texts():
    counts = mh.shingle_hashes(["A red car, parked.", "red car", "Red CAR!", "car", "", "?!"]).counts.tolist()
    assert counts == [2, 1, 1, 1, 0, 0]
    assert mh.shingle_set("red car") == mh.shingle_set("Red CAR!")
    assert mh.shingle_set("red car") != mh.shingle_set("car red")
    assert mh.shingle_set("a b c") == mh.shingle_set("A-b_c".replace("_", " "))
    assert mh.shingle_set("a b c d") == mh.shingle_set("a b c") | mh.shingle_set("b c d")
    assert mh.shingle_set("café über") == mh.shingle_set("CAFÉ ÜBER")


def test_short_texts_are_not_merged_into_one_cluster():
    texts = ["cat", "dog", "red car", "blue sky", "a b", "", "!!", "cat", "Red car."]
    result = dedup_self(texts, None, DedupParams(threshold=0.7))
    assert result.keep.tolist() == [True, True, True, True, True, True, True, False, False]
    assert result.duplicate_of.tolist()[7:] == [0, 2]


def test_char_unit_catches_a_one_word_edit_on_a_short_prompt():
    texts = ["a cute corgi puppy in the snow", "a cute corgi puppies in the snow"]
    assert dedup_self(texts, None, DedupParams(threshold=0.6)).keep.tolist() == [True, True]  # word J = 2/8
    assert dedup_self(texts, None, DedupParams(threshold=0.6, unit="char", ngram=5)).keep.tolist() == [True, False]


# --- agreement with datasketch -------------------------------------------------------------------


def test_signatures_equal_datasketch_minhash_for_the_same_shingle_hashes(prompts):
    from datasketch import MinHash

    texts = prompts[:40] + ["", "two words"]
    sh = mh.shingle_hashes(texts)
    perms = mh.permutations(128, 7)
    sig = mh.signatures(sh, perms)
    reference = MinHash(num_perm=128, seed=7, hashfunc=lambda value: value)
    assert np.array_equal(reference.permutations[0], perms[0]) and np.array_equal(reference.permutations[1], perms[1])
    h32 = mh.shingle_hash32(sh.hashes)
    for i in range(len(texts)):
        m = MinHash(num_perm=128, seed=7, hashfunc=lambda value: value)
        m.update_batch(h32[sh.offsets[i] : sh.offsets[i + 1]].tolist())
        assert np.array_equal(m.hashvalues, sig[i]), i


def test_jaccard_estimates_agree_with_datasketch_defaults_on_string_shingles(prompts):
    """datasketch's default sha1-of-shingle hashing gives estimates as accurate as ours."""
    import re

    from datasketch import MinHash

    texts = prompts[:300] + prompts[-306:-6]  # originals and their planted near-duplicates
    sig = mh.signatures(mh.shingle_hashes(texts), mh.permutations(128, 1))
    sets = _sets(texts)

    def string_minhash(text):
        tokens = re.findall(r"\w+", text.lower())
        shingles = {" ".join(tokens[i : i + 3]) for i in range(max(1, len(tokens) - 2))}
        m = MinHash(num_perm=128, seed=1)
        m.update_batch([s.encode("utf-8") for s in shingles])
        return m

    ours, theirs = [], []
    rng = np.random.default_rng(0)
    for i, j in [(i, i + 300) for i in range(300)] + [tuple(rng.choice(600, 2, replace=False)) for _ in range(100)]:
        exact = _jaccard(sets[i], sets[j])
        ours.append(abs(float((sig[i] == sig[j]).mean()) - exact))
        theirs.append(abs(string_minhash(texts[i]).jaccard(string_minhash(texts[j])) - exact))
    assert np.mean(ours) < 0.04 and np.mean(theirs) < 0.04
    assert abs(np.mean(ours) - np.mean(theirs)) < 0.015


# --- determinism ---------------------------------------------------------------------------------

_DIGEST_SCRIPT = """
import hashlib, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from scripts.dedup import dedup_self, DedupParams
from scripts.lib import minhash as mh
texts = Path(sys.argv[2]).read_text(encoding="utf-8").splitlines()
sh = mh.shingle_hashes(texts)
r = dedup_self(texts, None, DedupParams(threshold=0.6))
print(hashlib.sha256(sh.hashes.tobytes() + r.keep.tobytes() + r.duplicate_of.tobytes()).hexdigest())
"""


def test_results_are_identical_across_processes_with_different_hash_seeds(prompts, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(t.replace("\n", " ") for t in prompts[:800]), encoding="utf-8")
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", _DIGEST_SCRIPT, str(REPO), str(texts)], env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        digests.add(out.stdout.strip())
    assert len(digests) == 1


def test_batch_size_and_worker_processes_do_not_change_the_result(prompts):
    a = dedup_self(prompts, None, DedupParams(), Runtime(batch_rows=20_000))
    b = dedup_self(prompts, None, DedupParams(), Runtime(batch_rows=97))
    c = dedup_self(prompts, None, DedupParams(), Runtime(batch_rows=700, workers=2, verify_pairs=50))
    for other in (b, c):
        assert np.array_equal(a.keep, other.keep) and np.array_equal(a.duplicate_of, other.duplicate_of)
    assert a.stats == c.stats


# --- keep policy ---------------------------------------------------------------------------------


def test_keep_longest_keeps_the_longer_text_and_breaks_ties_by_stable_id():
    texts = ["a castle on a hill at dawn", "a castle on a hill at dawn, oil painting", "A castle on a hill at dawn!"]
    first = dedup_self(texts, ["c", "b", "a"], DedupParams(threshold=0.5, keep="first"))
    assert first.keep.tolist() == [True, False, False]
    longest = dedup_self(texts, ["c", "b", "a"], DedupParams(threshold=0.5, keep="longest"))
    assert longest.keep.tolist() == [False, True, False]
    # rows 0 and 2 have the same length: the smaller stable id ("a", row 2) wins the tie
    tie = dedup_self([texts[0], texts[2]], ["z", "a"], DedupParams(threshold=0.5, keep="longest"))
    assert tie.keep.tolist() == [False, True] and tie.duplicate_of.tolist() == [1, -1]


def test_keep_longest_on_real_prompts_never_keeps_a_shorter_row_over_a_longer_partner(prompts):
    texts = prompts[:1200] + prompts[-306:]
    ids = [f"id{i:05d}" for i in range(len(texts))]
    result = dedup_self(texts, ids, DedupParams(threshold=0.7, keep="longest"))
    sets = _sets(texts)
    pairs = _brute_force_pairs(sets, 0.7)
    _check_properties(result, sets, pairs, 0.7)
    removed = np.flatnonzero(~result.keep)
    assert len(removed) > 100
    for i in removed:
        d = int(result.duplicate_of[i])
        assert (-len(texts[d]), ids[d]) < (-len(texts[i]), ids[i])


def test_none_of_pair_removes_both_members_of_every_near_duplicate_pair(prompts):
    """The team's rule: every row with a partner at >= threshold goes (identical copies included)."""
    texts = prompts[:1500] + prompts[-306:] + ["a red fox in the snow"] * 3
    result = dedup_self(texts, None, DedupParams(threshold=0.7, keep="none_of_pair"))
    sets = _sets(texts)
    pairs = _brute_force_pairs(sets, 0.7)
    paired = {i for pair in pairs for i in pair}
    assert set(np.flatnonzero(~result.keep).tolist()) == paired
    assert {len(texts) - 3, len(texts) - 2, len(texts) - 1} <= paired
    best = {}
    for i, j in pairs:
        for a, b in ((i, j), (j, i)):
            best[a] = max(best.get(a, 0.0), _jaccard(sets[a], sets[b]))
    for i in paired:  # each removed row points at its most similar partner, which is removed too
        d = int(result.duplicate_of[i])
        assert not result.keep[d] and d != i
        assert result.similarity[i] == pytest.approx(_jaccard(sets[i], sets[d])) == pytest.approx(best[i])
    assert result.stats["kept"] == len(texts) - len(paired)
    first = dedup_self(texts, None, DedupParams(threshold=0.7))
    assert first.stats["clusters"] == result.stats["clusters"] and first.keep.sum() > result.keep.sum()


def test_each_step_passes_its_own_params_and_cross_mode_leaves_the_reference_alone(prompts):
    """The API release recipes use: resolve_params per step, keep_mask for self or cross mode."""
    from scripts.dedup import keep_mask, resolve_params

    base = {"threshold": 0.7}  # e.g. params.yaml's dedup section as plain data
    strict = resolve_params(base, threshold=0.9, keep="none_of_pair")
    assert strict.threshold == 0.9 and strict.keep == "none_of_pair" and resolve_params(base).threshold == 0.7
    with pytest.raises(DataError, match=r"keep: Input should be 'first', 'longest' or 'none_of_pair'"):
        resolve_params(base, keep="all")
    with pytest.raises(DataError, match=r"method: Input should be 'minhash' or 'embedding'"):
        resolve_params(base, method="simhash")

    texts = prompts[:1000]
    sets = _sets(texts)
    for params, threshold in ((resolve_params(base), 0.7), (strict, 0.9)):
        paired = {i for pair in _brute_force_pairs(sets, threshold) for i in pair}
        mask = keep_mask(texts, params)
        if params.keep == "none_of_pair":
            assert set(np.flatnonzero(~mask).tolist()) == paired
        else:
            assert np.array_equal(mask, dedup_self(texts, None, params).keep)

    reference, new = prompts[300:1000], prompts[:300]  # the planted copies of reference rows come first
    mask = keep_mask(new, strict, against=reference)
    ref_sets, new_sets = _sets(reference), _sets(new)
    expected = [not any(_jaccard(s, r) >= 0.9 for r in ref_sets) for s in new_sets]
    assert mask.tolist() == expected and 0 < mask.sum() < len(new)
    assert np.array_equal(~mask, near_duplicate_mask(new, reference, strict))


def test_a_huge_bucket_stays_bounded_and_correct():
    texts = [f"portrait of a knight in silver armor number {i}" for i in range(400)] + [
        "portrait of a knight in silver armor"
    ] * 50
    result = dedup_self(texts, None, DedupParams(threshold=0.7, bucket_window=8))
    sets = _sets(texts)
    _check_properties(result, sets, _brute_force_pairs(sets, 0.7), 0.7)
    assert result.stats["candidate_pairs"] <= 400 * 16 * result.stats["bands"]


# --- cross mode and the persisted index ----------------------------------------------------------


def test_cross_dedup_removes_only_new_rows_that_near_duplicate_the_reference(prompts, tmp_path):
    real = _real_prompts()
    reference, fresh = real[:2500], real[2500:]
    new = _plant(reference, 400, seed=9) + fresh
    params = DedupParams(threshold=0.7)
    index = build_index(reference, params)
    index.save(tmp_path / "index")
    loaded = Index.load(tmp_path / "index")
    result = loaded.query(new)
    assert np.array_equal(result.keep, index.query(new).keep)
    assert np.array_equal(result.keep, dedup_against(new, reference, params).keep)
    assert np.array_equal(~result.keep, near_duplicate_mask(new, reference, {"threshold": 0.7}))
    small_batches = Runtime(workers=2, batch_rows=500, verify_pairs=30)
    assert np.array_equal(result.keep, dedup_against(new, loaded, params, small_batches).keep)
    assert np.array_equal(result.keep, dedup_against(new, reference, params, small_batches).keep)
    with pytest.raises(DataError, match="params differ"):
        dedup_against(new, loaded, params.replace(threshold=0.8))

    ref_sets, new_sets = _sets(reference), _sets(new)
    both = _brute_force_pairs(ref_sets + new_sets, 0.7)
    should_go = {j - len(reference) for i, j in both if i < len(reference) <= j}
    assert set(np.nonzero(~result.keep)[0].tolist()) == should_go
    assert len(should_go) >= 390
    for i in np.nonzero(~result.keep)[0]:
        d = int(result.duplicate_of[i])
        assert _jaccard(new_sets[i], ref_sets[d]) == pytest.approx(result.similarity[i]) and result.similarity[i] >= 0.7


def test_loading_a_broken_index_names_the_missing_file(tmp_path):
    (tmp_path / "idx").mkdir()
    with pytest.raises(DataError, match="missing keys.npy"):
        Index.load(tmp_path / "idx")


def test_params_are_validated_with_a_clear_message():
    with pytest.raises(DataError, match=r"params.yaml: dedup: unknown key 'treshold' \(did you mean 'threshold'\?\)"):
        parse(Dedup, {"treshold": 0.8}, at=("dedup",))
    with pytest.raises(DataError, match=r"params.yaml: dedup: bands\*rows = 160 exceeds num_perm = 128"):
        parse(Dedup, {"bands": 20, "rows": 8}, at=("dedup",))
    with pytest.raises(DataError, match=r"Dedup.replace: threshold: .*less than or equal to 1"):
        DedupParams().replace(threshold=1.5)
    assert banding(parse(Dedup, {"threshold": 0.8})) == (21, 6)


# --- stage CLI and file-level CLI ----------------------------------------------------------------


def _copy_cli(target: Path) -> Path:
    """The scripts package alone, outside the repository (the CLI imports only the dedup command's modules)."""
    shutil.copytree(REPO / "scripts", target / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    return target


@pytest.fixture(scope="module")
def cli_repo(tmp_path_factory) -> Path:
    repo = _copy_cli(tmp_path_factory.mktemp("cli"))
    shutil.copy2(REPO / "params.yaml", repo / "params.yaml")  # the real dedup section
    return repo


def _run(args, cwd, pythonpath):
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run([sys.executable, "-m", "scripts", *args], cwd=cwd, env=env, capture_output=True, text=True)


def _clean_table(texts):
    ids = [f"{i:016x}" for i in range(len(texts))]
    return pa.table(
        {"id": ids, "source": ["s"] * len(texts), "prompt": texts, "text": texts, "width": list(range(len(texts)))}
    )


def test_stage_cli_writes_kept_rows_clusters_and_report(prompts, tmp_path, cli_repo):
    texts = prompts
    pq.write_table(_clean_table(texts), tmp_path / "in.parquet")
    out = tmp_path / "dedup" / "s.parquet"
    run = _run(["dedup", "s", str(tmp_path / "in.parquet"), str(out)], cli_repo, cli_repo)
    assert run.returncode == 0, run.stderr
    kept = pq.read_table(out)
    clusters = pq.read_table(tmp_path / "dedup" / "s.clusters.parquet").to_pylist()
    report = json.loads((tmp_path / "dedup" / "s.report.json").read_text())
    assert kept.column_names == ["id", "source", "prompt", "text", "width"]
    assert report["rows_in"] == len(texts) and report["kept"] == kept.num_rows
    assert report["removed"] == len(clusters) > 400
    assert {"clusters", "largest_cluster", "bands", "rows", "threshold"} <= set(report)
    kept_ids = set(kept.column("id").to_pylist())
    sets = dict(zip([f"{i:016x}" for i in range(len(texts))], _sets(texts)))
    for row in clusters:
        assert row["id"] not in kept_ids and row["duplicate_of"] in kept_ids
        assert _jaccard(sets[row["id"]], sets[row["duplicate_of"]]) == pytest.approx(row["jaccard"])
        assert row["jaccard"] >= 0.7


def test_stage_output_bytes_do_not_depend_on_how_the_input_is_chunked(tmp_path, cli_repo):
    """50k rows read as one row group or as eight give the same kept-rows file. pyarrow's pages follow the
    chunks it is handed (pq.write_table of the same rows chunked otherwise gives other bytes, checked here),
    and the Ray engine hands it rows in other chunks than the local one: 1M-row rehearsals differed so."""
    rng = np.random.default_rng(3)
    words = np.array([f"w{i}" for i in range(5000)])
    table = _clean_table([" ".join(rng.choice(words, 12)) for _ in range(50_000)])
    outputs = []
    for name, group in (("one", None), ("eight", 7000)):
        pq.write_table(table, tmp_path / f"{name}.parquet", row_group_size=group)
        out = tmp_path / name / "s.parquet"
        run = _run(["dedup", "s", str(tmp_path / f"{name}.parquet"), str(out)], cli_repo, cli_repo)
        assert run.returncode == 0, run.stderr
        outputs.append(out.read_bytes())
    assert pq.ParquetFile(tmp_path / "eight.parquet").metadata.num_row_groups == 8
    assert outputs[0] == outputs[1]
    kept = pq.read_table(tmp_path / "one" / "s.parquet")
    chunked = pa.concat_tables([kept.slice(i, 7000) for i in range(0, kept.num_rows, 7000)])
    pq.write_table(kept, tmp_path / "whole.parquet", compression="zstd")
    pq.write_table(chunked, tmp_path / "chunked.parquet", compression="zstd")
    assert (tmp_path / "whole.parquet").read_bytes() != (tmp_path / "chunked.parquet").read_bytes()


@pytest.mark.parametrize("rows", [0, 3, 70_000])
def test_the_row_group_writer_writes_what_pq_write_table_writes_for_one_chunk(tmp_path, rows):
    """However the rows come (none, in pieces), the file is pq.write_table's of the rows as one chunk."""
    from scripts.lib.tables import write_row_groups

    table = pa.table({"id": [f"{i:08x}" for i in range(rows)], "n": pa.array(range(rows), pa.int64())})
    pq.write_table(table.combine_chunks(), tmp_path / "reference.parquet", compression="zstd")
    pieces = [table.slice(i, 9_000) for i in range(0, rows, 9_000)]
    for name, given in (("whole", [table]), ("pieces", pieces), ("nothing", [] if rows == 0 else [table])):
        write_row_groups(iter(given), table.schema, tmp_path / f"{name}.parquet")
        assert (tmp_path / f"{name}.parquet").read_bytes() == (tmp_path / "reference.parquet").read_bytes(), name


def test_stage_cli_rejects_bad_input_with_one_line(tmp_path, cli_repo):
    missing = _run(["dedup", "s", str(tmp_path / "nope.parquet"), str(tmp_path / "o.parquet")], cli_repo, cli_repo)
    assert missing.returncode == 2 and "nope.parquet: input not found" in missing.stderr
    table = _clean_table(["a red car", None, "blue sky"])
    pq.write_table(table, tmp_path / "null.parquet")
    null = _run(["dedup", "s", str(tmp_path / "null.parquet"), str(tmp_path / "o.parquet")], cli_repo, cli_repo)
    assert null.returncode == 2 and "row 1: text is null" in null.stderr
    assert len(null.stderr.strip().splitlines()) == 1 and not (tmp_path / "o.parquet").exists()


def test_dedup_text_works_outside_a_dvc_repo(prompts, tmp_path, cli_repo):
    lines = [t.replace("\n", " ") for t in prompts[:500] + prompts[-306:-206]] + ["", "cat", "Cat!"]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert not (tmp_path / "params.yaml").exists()
    run = _run(["dedup-text", "in.txt", "out.jsonl"], tmp_path, cli_repo)
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(rows) == len(lines)
    sets = _sets(lines)
    for i, row in enumerate(rows):
        assert set(row) == {"keep", "duplicate_of"}
        if row["keep"]:
            assert row["duplicate_of"] is None
        else:
            d = row["duplicate_of"]
            assert rows[d]["keep"] and _jaccard(sets[i], sets[d]) >= DedupParams().threshold
    assert rows[-1] == {"keep": False, "duplicate_of": len(lines) - 2} and rows[-3]["keep"]
    strict = _run(["dedup-text", "in.txt", "strict.jsonl", "--threshold", "1.0"], tmp_path, cli_repo)
    assert strict.returncode == 0, strict.stderr
    strict_rows = [json.loads(line) for line in (tmp_path / "strict.jsonl").read_text().splitlines()]
    assert sum(r["keep"] for r in strict_rows) > sum(r["keep"] for r in rows)


def test_dedup_text_rejects_invalid_utf8_naming_the_line(tmp_path, cli_repo):
    (tmp_path / "bad.txt").write_bytes(b"fine line\nbad \xff line\n")
    run = _run(["dedup-text", "bad.txt", "out.jsonl"], tmp_path, cli_repo)
    assert run.returncode == 2 and "line 2: not valid UTF-8" in run.stderr
    assert not (tmp_path / "out.jsonl").exists()


# --- acceptance 3 in a real DVC repo: dvc exp run -S dedup.threshold=... ---------------------------


def test_dvc_exp_run_with_a_higher_threshold_keeps_more(prompts, tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    dvc = Path(sys.executable).parent / "dvc"
    repo = tmp_path / "repo"
    _copy_cli(repo)
    (repo / "params.yaml").write_text("dedup:\n  threshold: 0.5\n", encoding="utf-8")
    (repo / "dvc.yaml").write_text(
        "stages:\n  dedup:\n"
        "    cmd: python -m scripts dedup s data/clean/s.parquet data/dedup/s.parquet\n"
        "    deps: [scripts/dedup.py, scripts/lib/minhash.py, data/clean/s.parquet]\n"
        "    params: [dedup]\n"
        "    outs: [data/dedup/s.parquet, data/dedup/s.clusters.parquet]\n"
        "    metrics:\n      - data/dedup/s.report.json:\n          cache: false\n",
        encoding="utf-8",
    )
    (repo / "data" / "clean").mkdir(parents=True)
    pq.write_table(_clean_table(prompts[:600] + prompts[-306:-6]), repo / "data" / "clean" / "s.parquet")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }

    def sh(*args):
        out = subprocess.run(list(args), cwd=repo, env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    sh("git", "init", "-q")
    sh(str(dvc), "init", "-q")
    sh(str(dvc), "config", "core.autostage", "true")
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "init")
    sh(str(dvc), "exp", "run", "-S", "dedup.threshold=0.5")
    low = json.loads((repo / "data" / "dedup" / "s.report.json").read_text())
    sh(str(dvc), "exp", "run", "-S", "dedup.threshold=0.8")
    high = json.loads((repo / "data" / "dedup" / "s.report.json").read_text())
    assert high["threshold"] == 0.8 and low["threshold"] == 0.5
    assert high["kept"] > low["kept"] and high["rows_in"] == low["rows_in"] == 900
    shown = sh(str(dvc), "exp", "show", "--no-pager", "--csv")
    assert "largest_cluster" in shown
