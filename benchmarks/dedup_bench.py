"""Benchmark dedup_self on synthetic prompts with planted near-duplicates.

    .venv/bin/python benchmarks/dedup_bench.py            # 100k rows + naive datasketch baseline
    .venv/bin/python benchmarks/dedup_bench.py --1m       # 1M rows (+ the 100k baseline comparison)
    .venv/bin/python benchmarks/dedup_bench.py --10m      # 10M rows
    .venv/bin/python benchmarks/dedup_bench.py 250000 --no-naive
    .venv/bin/python benchmarks/dedup_bench.py 100000 --generator realistic --no-naive   # phrases of real prompts
    .venv/bin/python benchmarks/dedup_bench.py 100000 --generator realistic --no-naive --verify   # + the exact check three ways
    .venv/bin/python benchmarks/dedup_bench.py --1m --generator realistic --no-naive --rensa  # + rensa (pip install rensa)
    .venv/bin/python benchmarks/dedup_bench.py --1m --out benchmarks/results/dedup_bench_1m.txt   # also keep the output
    .venv/bin/python benchmarks/dedup_bench.py --1m --no-naive --rensa --datatrove --workers 2   # side by side

--datatrove runs datatrove's MinHash pipeline (LocalPipelineExecutor, 4 stages, word 3-grams) on the same
rows through benchmarks/datatrove_dedup.py, with the python of a venv of its own (datatrove is not in
requirements.txt; measured with datatrove 0.10.1, `--datatrove-python`, default /work/dtvenv/bin/python;
that script's docstring says how to make the venv). Its bands: datatrove's 8 hashes a bucket and
round(threshold ** -8) buckets, so its LSH threshold (1/buckets) ** (1/8), the formula of datatrove's
minhash.py, is nearest ours (0.7 -> 17 buckets, 0.702).

Prints docs/s, peak RSS, pair recall against exact Jaccard (planted pairs whose exact Jaccard is
>= threshold: a pair counts as found when the two rows are not both kept), false removals, and the
speed ratio against the naive datasketch approach (per-document MinHash + MinHashLSH insert/query)
on the same first 100k rows in this process. Targets (issue 5, 2 cores): 10M in <= 300 s with peak
RSS <= 6 GB; >= 20x the naive speed at equal or better recall. With --rensa or --datatrove, a table of
every engine at the end (false removals are counted with our exact verifier for all of them).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contextlib

from benchmarks._record import TreeMemory, add_out_argument, record
from scripts.dedup import DedupParams, banding, dedup_self
from scripts.lib import minhash as mh
from scripts.lib.params import Runtime
from scripts.lib.shingle_sets import pair_jaccard, shingle_sets

CHUNK = 200_000


def peak_rss_gib() -> float:
    """This process's peak RSS since the last reset_peak_rss() (Linux VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def current_rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def reset_peak_rss() -> None:
    """Start peak-RSS accounting afresh (so the generator's own peak is not charged to dedup)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def vocabulary(size: int, rng: np.random.Generator) -> pa.Array:
    syllables = np.array(["ka", "lo", "mi", "ne", "ru", "ta", "vo", "shi", "an", "el", "or", "ix", "um", "pre", "sto"])
    parts = rng.integers(0, len(syllables), (size, 3))
    lengths = rng.integers(1, 4, size)
    words = [
        "".join(syllables[p[:n]]) + str(i % 7 if i % 5 == 0 else "") for i, (p, n) in enumerate(zip(parts, lengths))
    ]
    return pa.array(list(dict.fromkeys(words)))


FIXTURES = [
    Path(__file__).resolve().parents[1] / "tests" / "fixtures",
    Path(__file__).resolve().parents[2] / "shared" / "fixtures",
]


def phrases() -> pa.Array:
    """The phrases of the real fixture prompts (split at punctuation and at ' with ', ' and ', ' of ')."""
    import csv

    folder = next((f for f in FIXTURES if (f / "gpt4-prompts-3k.txt").exists()), None)
    if folder is None:
        raise SystemExit("fixture prompts not found (tests/fixtures or ../shared/fixtures)")
    texts = (folder / "gpt4-prompts-3k.txt").read_text(encoding="utf-8").splitlines()
    with (folder / "openprompts-1k.csv").open(encoding="utf-8") as f:
        texts += [row[0] for row in list(csv.reader(f))[1:] if row]
    found = (p.strip() for t in texts for p in re.split(r"[,.;:!?()]| with | and | of ", t))
    return pa.array(list(dict.fromkeys(p for p in found if len(p.split()) >= 2)))


def realistic_prompts(n: int, seed: int = 0, planted_fraction: float = 0.1):
    """Like synthetic_prompts, but each prompt is 2-6 phrases of real prompts drawn Zipf-like, joined by
    commas: real corpora repeat styles and subjects, so many rows share long runs of words."""
    return synthetic_prompts(n, seed, planted_fraction, vocab=phrases(), units=(2, 7), separator=", ")


def synthetic_prompts(
    n: int,
    seed: int = 0,
    planted_fraction: float = 0.1,
    vocab: pa.Array | None = None,
    units: tuple[int, int] = (6, 32),
    separator: str = " ",
):
    """(texts, planted) where planted[k] = (row, source_row): row is a one-unit edit (a word, or a phrase
    for the realistic generator) or a re-cased copy."""
    rng = np.random.default_rng(seed)
    vocab = vocabulary(30_000, rng) if vocab is None else vocab
    weights = 1.0 / np.arange(1, len(vocab) + 1) ** 1.05  # Zipf-like: common words share n-grams
    weights = weights[rng.permutation(len(vocab))] if separator != " " else weights  # phrases: no order bias
    weights /= weights.sum()
    chunks, planted = [], []
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        lengths = rng.integers(*units, m)
        ids = rng.choice(len(vocab), int(lengths.sum()), p=weights)
        offsets = mh.offsets_from_counts(lengths)
        # planted rows copy an earlier row of the chunk and change one word (or only the case)
        rows = np.sort(rng.choice(np.arange(1, m), int(m * planted_fraction), replace=False))
        sources = (rng.random(len(rows)) * rows).astype(np.int64)
        texts = pc.binary_join(
            pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), vocab.take(pa.array(ids))), separator
        )
        copies = pc.binary_join(
            pa.ListArray.from_arrays(
                pa.array(mh.offsets_from_counts(lengths[sources]).astype(np.int32)),
                vocab.take(pa.array(_edited_ids(ids, offsets, sources, len(vocab), rng))),
            ),
            separator,
        )
        recase = rng.random(len(rows)) < 0.2
        copies = pa.array(
            np.where(
                recase, pc.utf8_upper(copies).to_numpy(zero_copy_only=False), copies.to_numpy(zero_copy_only=False)
            )
        )
        merged = texts.to_numpy(zero_copy_only=False).copy()
        merged[rows] = copies.to_numpy(zero_copy_only=False)
        chunks.append(pa.array(merged, type=pa.large_string()))
        planted.append(np.stack([rows + start, sources + start], axis=1))
    return pa.concat_arrays(chunks), np.concatenate(planted)


def _edited_ids(ids, offsets, sources, vocab_size, rng):
    lengths = offsets[sources + 1] - offsets[sources]
    out_offsets = mh.offsets_from_counts(lengths)
    flat = ids[np.repeat(offsets[sources], lengths) + np.arange(lengths.sum()) - np.repeat(out_offsets[:-1], lengths)]
    change = out_offsets[:-1] + (rng.random(len(sources)) * lengths).astype(np.int64)
    flat[change] = rng.integers(0, vocab_size, len(sources))
    return flat


def generated_elsewhere(size: int, generator: str = "synthetic") -> tuple[pa.Array, np.ndarray]:
    """synthetic_prompts(size) made in a child process and read back from parquet, so this
    process's RSS holds the texts (as a stage reading its input would) and no generator garbage."""
    import multiprocessing
    import tempfile

    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory(prefix="dedup-bench-") as tmp:
        child = multiprocessing.get_context("fork").Process(target=_generate_to, args=(size, tmp, generator))
        child.start()
        child.join()
        if child.exitcode != 0:
            raise SystemExit(f"generator failed (exit {child.exitcode})")
        texts = pq.read_table(Path(tmp) / "texts.parquet").column("text").combine_chunks()
        planted = np.load(Path(tmp) / "planted.npy")
    return texts, planted


def _generate_to(size: int, folder: str, generator: str) -> None:
    import pyarrow.parquet as pq

    texts, planted = (realistic_prompts if generator == "realistic" else synthetic_prompts)(size)
    pq.write_table(pa.table({"text": texts}), Path(folder) / "texts.parquet")
    np.save(Path(folder) / "planted.npy", planted)


def true_pairs(texts: pa.Array, planted: np.ndarray, threshold: float) -> np.ndarray:
    """Planted pairs whose exact shingle-Jaccard >= threshold."""
    rows = np.unique(planted)
    sets = shingle_sets(texts.take(pa.array(rows)), "word", 3)
    local = np.searchsorted(rows, planted)
    return planted[pair_jaccard(sets, sets, local) >= threshold]


def recall(keep: np.ndarray, pairs: np.ndarray) -> float:
    return float((~(keep[pairs[:, 0]] & keep[pairs[:, 1]])).mean()) if len(pairs) else 1.0


def naive_datasketch(texts: list[str], threshold: float, num_perm: int) -> np.ndarray:
    """The obvious version: per-document MinHash, then MinHashLSH query-then-insert in order."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    keep = np.ones(len(texts), dtype=bool)
    for i, text in enumerate(texts):
        shingles = set(shingle_strings(text))
        m = MinHash(num_perm=num_perm, seed=1)
        for s in shingles:
            m.update(s.encode("utf-8"))
        if lsh.query(m):
            keep[i] = False
        else:
            lsh.insert(str(i), m)
    return keep


def shingle_strings(text: str) -> list[str]:
    """Our shingling contract in Python: lowercase `\\w+` tokens, word 3-grams, a short text one shingle."""
    tokens = re.findall(r"\w+", text.lower())
    return [" ".join(tokens[k : k + 3]) for k in range(max(1, len(tokens) - 2))] if tokens else []


def rensa_dedup(texts: list[str], threshold: float, num_perm: int, bands: int, check: str) -> np.ndarray:
    """rensa's RMinHash + RMinHashLSH with our band layout, query-then-insert in order (keep first). A
    candidate counts when `check` is "none" (any shared band), "estimate" (MinHash-estimated Jaccard
    reaches the threshold) or "exact" (the shingle sets' exact Jaccard does)."""
    from rensa import RMinHash, RMinHashLSH

    lsh = RMinHashLSH(threshold=threshold, num_perm=num_perm, num_bands=bands)
    keep = np.ones(len(texts), dtype=bool)
    kept_sets: dict[int, set[str]] = {}
    kept_signatures: dict[int, RMinHash] = {}
    for i, text in enumerate(texts):
        shingles = shingle_strings(text)
        if not shingles:
            continue
        signature = RMinHash(num_perm=num_perm, seed=42)
        signature.update(shingles)
        hits = lsh.query(signature)
        if check == "estimate":
            hits = [h for h in hits if signature.jaccard(kept_signatures[h]) >= threshold]
        elif check == "exact" and hits:
            mine = set(shingles)
            hits = [h for h in hits if len(mine & kept_sets[h]) >= threshold * len(mine | kept_sets[h])]
        if hits:
            keep[i] = False
        else:
            lsh.insert(i, signature)
            if check == "estimate":
                kept_signatures[i] = signature
            elif check == "exact":
                kept_sets[i] = set(shingles)
    return keep


def rensa_benchmark(
    texts: pa.Array, pairs: np.ndarray, params: DedupParams, checks=("none", "estimate", "exact"), cap: float = 0.0
) -> list[dict]:
    """Ours (one process) beside rensa with each candidate check, on the same rows, each run in a forked
    child so that none inherits what an earlier one left: CPU and wall seconds, the child's peak RSS (from
    its RSS at the fork: the texts, and the rows as Python strings for rensa), recall of the planted pairs,
    false removals (removed rows without a kept partner). With `cap`, a rensa run that reaches `cap` times
    ours' CPU seconds is stopped (RLIMIT_CPU) and reported as at least that."""
    bands, _ = banding(params)
    rows = texts.to_pylist()
    runs = [("ours, 1 process", lambda: dedup_self(texts, None, params, Runtime(workers=1)).keep)]
    runs += [
        (f"rensa {check}", lambda check=check: rensa_dedup(rows, params.threshold, params.num_perm, bands, check))
        for check in checks
    ]
    cpu, summary = {}, []
    for name, run in runs:
        limit = int(cap * cpu["ours, 1 process"]) + 1 if cap and name.startswith("rensa") else None
        keep, measured = in_child(run, limit)
        cpu[name] = measured["cpu_s"]
        if keep is None:
            summary.append({"engine": f"{name} (stopped)", **measured})
            print(
                f"{name:<16} {len(rows):>10,} rows: stopped at the cap, {limit} CPU s after "
                f"{measured['wall_s']:.1f}s wall: {name} / ours CPU > {limit / cpu['ours, 1 process']:.2f}x"
            )
            continue
        row = {"engine": name, **measured, **quality(texts, keep, pairs, params)}
        summary.append(row)
        print(
            f"{name:<16} {len(rows):>10,} rows: {cpu[name]:7.1f} CPU s  {len(rows) / cpu[name]:9,.0f} docs/CPU s  "
            f"wall {row['wall_s']:.1f}s  peak RSS {row['rss_gib']:.2f} GiB (from {measured['start_gib']:.2f})  "
            f"removed {row['removed']:,}  recall {row['recall']:.4f}  false removals {row['false_removals']}"
        )
    if "rensa exact" in cpu:
        print(f"rensa exact / ours CPU: {cpu['rensa exact'] / cpu['ours, 1 process']:.2f}x (at least, if stopped)")
    return summary


def in_child(run, cpu_limit: int | None = None) -> tuple[np.ndarray | None, dict]:
    """run() -> keep mask, in a forked child: (keep, {cpu_s, wall_s, rss_gib: the child's peak RSS,
    start_gib: its RSS when it started}). A child stopped at `cpu_limit` CPU seconds gives (None,
    {cpu_s: the limit, wall_s})."""
    import multiprocessing
    import signal

    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_measured, args=(run, send, cpu_limit))
    w0 = time.perf_counter()
    child.start()
    send.close()
    try:
        keep, measured = receive.recv()
    except EOFError:  # the child died without an answer
        child.join()
        if cpu_limit is not None and child.exitcode in (-signal.SIGXCPU, -signal.SIGKILL):
            nan = float("nan")
            return None, {
                "cpu_s": float(cpu_limit),
                "wall_s": time.perf_counter() - w0,
                "rss_gib": nan,
                "start_gib": nan,
            }
        raise SystemExit(f"benchmark child failed (exit {child.exitcode})") from None
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"benchmark child failed (exit {child.exitcode})")
    return keep, measured


def _measured(run, send, cpu_limit: int | None = None) -> None:
    if cpu_limit is not None:  # SIGXCPU at the soft limit ends the child; SIGKILL 10 s later if it does not
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_limit, cpu_limit + 10))
    reset_peak_rss()
    start = current_rss_gib()
    c0, w0 = time.process_time(), time.perf_counter()
    keep = run()
    measured = {"cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - w0}
    send.send((keep, {**measured, "rss_gib": peak_rss_gib(), "start_gib": start}))
    send.close()


def quality(texts: pa.Array, keep: np.ndarray, pairs: np.ndarray, params: DedupParams) -> dict:
    return {
        "removed": int((~keep).sum()),
        "recall": recall(keep, pairs),
        "false_removals": false_removals(texts, keep, params.threshold, params),
    }


DATATROVE_PYTHON = Path(os.environ.get("DATATROVE_PYTHON", "/work/dtvenv/bin/python"))
DATATROVE_HASHES_PER_BUCKET = 8  # datatrove's default (MinhashConfig: 14 buckets x 8, threshold ~0.72)


def datatrove_banding(threshold: float) -> tuple[int, int]:
    """(buckets, hashes a bucket) whose LSH threshold (1/buckets) ** (1/hashes), datatrove's formula, is
    nearest `threshold` with its 8 hashes a bucket."""
    per_bucket = DATATROVE_HASHES_PER_BUCKET
    return max(1, round(threshold**-per_bucket)), per_bucket


def datatrove_benchmark(
    texts: pa.Array, pairs: np.ndarray, params: DedupParams, workers: int, python: Path, shards: int = 2
) -> dict:
    """datatrove's MinHash pipeline in a subprocess of its own venv (benchmarks/datatrove_dedup.py) on the
    same rows, written as `shards` parquet files (one a task; the ids are the row numbers): wall time of
    the four stages, sampled peak PSS of its process tree, recall and false removals like the others."""
    import pyarrow.parquet as pq

    if not python.exists():
        raise SystemExit(f"{python} not found: make the datatrove venv (benchmarks/datatrove_dedup.py says how)")
    buckets, per_bucket = datatrove_banding(params.threshold)
    script = Path(__file__).resolve().parent / "datatrove_dedup.py"
    with tempfile.TemporaryDirectory(prefix="dedup-bench-datatrove-") as tmp:
        folder, work = Path(tmp) / "input", Path(tmp) / "work"
        folder.mkdir()
        bounds = np.linspace(0, len(texts), shards + 1).astype(np.int64)
        for k in range(shards):
            ids = pc.cast(pa.array(np.arange(bounds[k], bounds[k + 1])), pa.string())
            part = texts.slice(bounds[k], bounds[k + 1] - bounds[k])
            pq.write_table(pa.table({"id": ids, "text": part}), folder / f"{k:05d}.parquet")
        command = [str(python), str(script), str(folder), str(work), "--ngrams", str(params.ngram)]
        command += ["--buckets", str(buckets), "--hashes-per-bucket", str(per_bucket), "--workers", str(workers)]
        t0 = time.perf_counter()
        with (Path(tmp) / "datatrove.log").open("w") as log:
            done = subprocess.run(command, stdout=subprocess.PIPE, stderr=log, text=True)
        process_s = time.perf_counter() - t0
        if done.returncode != 0:
            tail = (Path(tmp) / "datatrove.log").read_text().splitlines()[-30:]
            raise SystemExit("datatrove_dedup.py failed:\n" + "\n".join(tail))
        report = json.loads(done.stdout.strip().splitlines()[-1])
        removed = np.loadtxt(report["removed_ids"], dtype=np.int64, ndmin=1)
    keep = np.ones(len(texts), dtype=bool)
    keep[removed] = False
    row = {
        "engine": f"datatrove, {workers} workers",
        "wall_s": report["total_s"],
        "cpu_s": float("nan"),
        "rss_gib": report["tree_pss_gib"],
        **quality(texts, keep, pairs, params),
    }
    stages = ", ".join(f"{name} {s:.1f}s" for name, s in report["seconds"].items())
    print(
        f"datatrove {len(texts):>10,} rows: {row['wall_s']:7.1f}s  {len(texts) / row['wall_s']:9,.0f} docs/s "
        f"({stages}; the process {process_s:.1f}s)  sampled peak PSS of its process tree "
        f"{report['tree_pss_gib']:.2f} GiB (largest process {report['largest_rss_gib']:.2f} GiB)  "
        f"removed {row['removed']:,}  recall {row['recall']:.4f}  false removals {row['false_removals']}  "
        f"[{report['config']}, LSH threshold (1/{buckets})^(1/{per_bucket}) = {(1 / buckets) ** (1 / per_bucket):.3f}, "
        f"{report['shards']} tasks]"
    )
    return row


def print_summary(size: int, rows: list[dict]) -> None:
    print(f"\nside by side, {size:,} rows (docs/s = rows / wall s; peak RSS: see each line above)")
    print("| engine | wall s | CPU s | docs/s | peak RSS GiB | removed | recall | false removals |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        cpu = "" if np.isnan(r["cpu_s"]) else f"{r['cpu_s']:.1f}"
        if "removed" not in r:  # stopped at the CPU cap: no answer to judge
            print(f"| {r['engine']} | > {r['wall_s']:.1f} | > {cpu} | < {size / r['wall_s']:,.0f} | | | | |")
            continue
        print(
            f"| {r['engine']} | {r['wall_s']:.1f} | {cpu} | {size / r['wall_s']:,.0f} | {r['rss_gib']:.2f} | "
            f"{r['removed']:,} | {r['recall']:.4f} | {r['false_removals']:,} |"
        )


def false_removals(texts: pa.Array, keep: np.ndarray, threshold: float, params: DedupParams) -> int:
    """Removed rows without any kept row at Jaccard >= threshold (checked with our exact verifier)."""
    from scripts.dedup import dedup_against

    removed = np.nonzero(~keep)[0]
    kept = np.nonzero(keep)[0]
    cross = dedup_against(
        texts.take(pa.array(removed)), texts.take(pa.array(kept)), params.replace(threshold=threshold)
    )
    return int(cross.keep.sum())


def unsupported_removals(texts: pa.Array, result, params: DedupParams) -> int:
    """Ours' false removals, exactly: removed rows whose duplicate_of is not kept or is below the
    threshold by exact Jaccard (false_removals searches kept partners through a MinHash index, which
    takes at most bucket_window rows of a bucket and so can miss one)."""
    from scripts.lib.dedup import signing

    removed = np.flatnonzero(~result.keep)
    partner = result.duplicate_of[removed]
    orphan = (partner < 0) | ~result.keep[np.maximum(partner, 0)]
    pairs = np.stack([removed, np.maximum(partner, 0)], axis=1)
    jaccard = signing.exact_jaccard(texts, texts, pairs, params, 500_000)
    return int((orphan | (jaccard < params.threshold)).sum())


def verification_benchmark(texts: pa.Array, params: DedupParams) -> None:
    """The exact check of one run's candidates, on the same pairs and the same sets: numpy's count of every
    whole intersection (the baseline), numpy's count after the size filter, and the compiled merge walk
    (what dedup runs from COMPILED_FROM pairs a call; the compile itself timed apart)."""
    from scripts.lib.dedup import signing
    from scripts.lib.dedup.keep import keep_rank
    from scripts.lib.shingle_sets import compile_walk, jaccard_at_least

    rank = keep_rank(texts, None, params.keep)
    sketch = signing.sketch(texts, params, Runtime(workers=1))
    reps, _, _ = signing.identical_groups(sketch.sequence_keys, rank, np.nonzero(sketch.shingle_counts > 0)[0])
    candidates = signing.candidate_rows(*signing.self_candidates(sketch.band_keys, reps, rank, params.bucket_window))
    del sketch
    t0 = time.perf_counter()
    sets = shingle_sets(texts, params.unit, params.ngram)
    sets_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    compile_walk()
    compile_s = time.perf_counter() - t0
    timed = {}
    for name, threshold, compiled in (
        ("whole", 0.0, False),
        ("size", params.threshold, False),
        ("walk", params.threshold, True),
    ):
        t0 = time.perf_counter()
        timed[name] = (jaccard_at_least(sets, sets, candidates, threshold, compiled=compiled), time.perf_counter() - t0)
    full, full_s = timed["whole"]
    reached = full >= params.threshold
    same = all(np.array_equal(timed[name][0], np.where(reached, full, 0.0)) for name in ("size", "walk"))
    print(
        f"verify {len(candidates):,} candidates of {len(texts):,} rows ({int(reached.sum()):,} reach the threshold; "
        f"their sets built in {sets_s:.1f}s): numpy, whole intersections {full_s:.1f}s; numpy after the size filter "
        f"{timed['size'][1]:.1f}s ({full_s / timed['size'][1]:.1f}x faster); compiled walk {timed['walk'][1]:.2f}s "
        f"({full_s / timed['walk'][1]:.1f}x faster; its compile {compile_s:.2f}s); same verified pairs and similarities: {same}"
    )


def index_benchmark(texts: pa.Array, params: DedupParams) -> None:
    """Cross-dedup as releases use it: a persisted index of the reference, queried with new rows."""
    import tempfile

    from scripts.dedup import Index, build_index

    cut = len(texts) * 9 // 10
    t0 = time.perf_counter()
    index = build_index(texts.slice(0, cut), params)
    built = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="dedup-index-") as tmp:
        index.save(Path(tmp) / "index")
        size = sum(f.stat().st_size for f in (Path(tmp) / "index").iterdir()) / 2**20
        t0 = time.perf_counter()
        result = Index.load(Path(tmp) / "index").query(texts.slice(cut))
        queried = time.perf_counter() - t0
    print(
        f"index {cut:>10,} reference rows: build {built:.1f}s, {size:.0f} MiB on disk; "
        f"query {len(texts) - cut:,} new rows (load + query): {queried:.1f}s, removed {result.stats['removed']:,}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("size", nargs="?", type=int, default=100_000)
    parser.add_argument("--1m", dest="one_m", action="store_true", help="1,000,000 rows")
    parser.add_argument("--10m", dest="ten_m", action="store_true", help="10,000,000 rows")
    parser.add_argument("--threshold", type=float, default=0.7)
    parser.add_argument("--no-naive", action="store_true", help="skip the datasketch baseline")
    parser.add_argument("--workers", type=int, default=1, help="signature processes (0 = one per core)")
    parser.add_argument(
        "--generator",
        choices=["synthetic", "realistic"],
        default="synthetic",
        help="synthetic: Zipf words | realistic: phrases of the real fixture prompts",
    )
    parser.add_argument("--engine", choices=["local", "ray"], default="local", help="runtime.engine")
    parser.add_argument("--index", action="store_true", help="also time build_index on 90%% and query the last 10%%")
    parser.add_argument("--rensa", action="store_true", help="also run rensa with and without an exact pass")
    parser.add_argument(
        "--false-removals", action="store_true", help="also count removed rows with no kept row at the threshold"
    )
    parser.add_argument(
        "--rensa-checks",
        default="none,estimate,exact",
        help="which rensa candidate checks to run (comma-separated: none, estimate, exact)",
    )
    parser.add_argument(
        "--cpu-cap",
        type=float,
        default=0.0,
        help="stop each rensa run at this many times ours' CPU seconds (RLIMIT_CPU; 0: no cap): at 1M "
        "realistic rows rensa's exact pass runs for hours, and a run stopped at 2x ours already answers "
        "'ours <= half of rensa+exact'",
    )
    parser.add_argument(
        "--datatrove", action="store_true", help="also run datatrove's MinHash pipeline (a venv of its own)"
    )
    parser.add_argument("--datatrove-python", type=Path, default=DATATROVE_PYTHON, help="python of the datatrove venv")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="also time the exact check of the candidates three ways (numpy whole, numpy sized, compiled walk)",
    )
    add_out_argument(parser)
    args = parser.parse_args()
    record(args.out)
    size = 10_000_000 if args.ten_m else 1_000_000 if args.one_m else args.size
    params = DedupParams(threshold=args.threshold)
    runtime = Runtime(workers=args.workers, engine=args.engine)
    bands, rows = banding(params)

    t0 = time.perf_counter()
    texts, planted = generated_elsewhere(size, args.generator)
    print(
        f"generated {size:,} {args.generator} prompts ({len(planted):,} planted) in {time.perf_counter() - t0:.1f}s; "
        f"rss {peak_rss_gib():.2f} GiB; threshold {args.threshold}, {bands}x{rows} bands, workers {args.workers}"
    )

    reset_peak_rss()
    print(f"rss before dedup {current_rss_gib():.2f} GiB (the texts, read from parquet)")
    with TreeMemory() as tree:
        t0, c0 = time.perf_counter(), time.process_time()
        result = dedup_self(texts, None, params, runtime)
        seconds, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    rss = peak_rss_gib()
    pairs = true_pairs(texts, planted, args.threshold)
    print(
        f"ours  {size:>10,} rows: {seconds:7.1f}s  {size / seconds:9,.0f} docs/s  peak RSS {rss:.2f} GiB "
        f"(sampled peak PSS incl. workers {tree.peak_gib:.2f} GiB)  "
        f"removed {result.stats['removed']:,}  recall {recall(result.keep, pairs):.4f} of {len(pairs):,} true planted pairs  "
        f"candidates {result.stats['candidate_pairs']:,}"
    )
    summary = []
    if args.rensa or args.datatrove:
        workers = args.workers or os.cpu_count()
        summary.append(
            {
                "engine": f"ours, {workers} worker{'s' if workers > 1 else ''}",
                "wall_s": seconds,
                "cpu_s": cpu_s if workers == 1 else float("nan"),
                "rss_gib": max(rss, tree.peak_gib),  # the sampled PSS misses a run shorter than a sample
                **quality(texts, result.keep, pairs, params),
            }
        )
        print(
            f"ours false removals: {summary[0]['false_removals']} by the index search; "
            f"{unsupported_removals(texts, result, params)} removed rows without a kept duplicate_of at the threshold"
        )
    elif args.false_removals:  # the removed rows against every kept row, exact Jaccard (about one more dedup run)
        print(f"ours false removals: {false_removals(texts, result.keep, args.threshold, params)}")

    if args.index:
        index_benchmark(texts, params)
    if args.verify:
        verification_benchmark(texts, params)
    if args.rensa:
        summary += rensa_benchmark(texts, pairs, params, args.rensa_checks.split(","), args.cpu_cap)
    if args.datatrove:
        summary.append(datatrove_benchmark(texts, pairs, params, args.workers or os.cpu_count(), args.datatrove_python))
    if summary:
        print_summary(size, summary)
    if args.no_naive:
        return
    n = min(size, 100_000)
    sub = texts.slice(0, n)
    sub_pairs = pairs[(pairs < n).all(axis=1)]
    t0 = time.perf_counter()
    ours = dedup_self(sub, None, params, Runtime(workers=1))  # one process, like the naive loop
    ours_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    naive = naive_datasketch(sub.to_pylist(), args.threshold, params.num_perm)
    naive_s = time.perf_counter() - t0
    print(
        f"ours  {n:>10,} rows: {ours_s:7.1f}s  recall {recall(ours.keep, sub_pairs):.4f}  "
        f"false removals {false_removals(sub, ours.keep, args.threshold, params)}"
    )
    print(
        f"naive {n:>10,} rows: {naive_s:7.1f}s  recall {recall(naive, sub_pairs):.4f}  "
        f"false removals {false_removals(sub, naive, args.threshold, params)}  (datasketch MinHash.update + MinHashLSH)"
    )
    print(f"speedup vs naive: {naive_s / ours_s:.1f}x")


if __name__ == "__main__":
    main()
