"""generate.preset: `reference` renders what the reference team's generate_sd2_images.py rendered.

The team's loop (songjein/image-to-prompts-28th-solution, generate_sd2_images.py at 4e63e39) is
transcribed below with diffusers directly, and our stage with `preset: reference` must write the same
bytes under the same names. The two deviations, both forced by testing on a CPU: the tiny model in
place of stabilityai/stable-diffusion-2, and float64 (our cpu_dtype) in place of fp16.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from scripts.generate import generate, plan_jobs
from scripts.lib.errors import DataError
from scripts.lib.image_store import JOURNAL
from scripts.lib.params import GENERATE_PRESETS, Generate

REPO = Path(__file__).resolve().parents[1]
# raw prompts as the dedup table holds them (stray spaces included: the team's line.strip() and
# CLIP's whitespace cleaning make them irrelevant to the image)
RAW = [
    "a lighthouse at night, oil painting by greg rutkowski, 8k ",
    "portrait of a robot  knight",
    "a red fox in the snow, trending on artstation",
]


def team_loop(model_dir, prompts_path, image_dir, prefix, num_gpus=1, stride_idx=0, steps=50):
    """generate_sd2_images.py's loop, line for line (fp16 -> float64, with the scheduler's tables, as
    generate computes on CPU: render.float64_scheduler; `steps` is CFG.image_gen_steps)."""
    import torch
    from diffusers import StableDiffusionPipeline

    from scripts.lib.render import float64_scheduler

    device = torch.device("cpu")  # the script: cuda:{gpu_idx} if available else cpu
    generator = torch.Generator(device).manual_seed(42)
    model = StableDiffusionPipeline.from_pretrained(str(model_dir), dtype=torch.float64).to(device)
    float64_scheduler(model.scheduler)
    model.set_progress_bar_config(disable=True)
    os.makedirs(image_dir, exist_ok=True)
    with open(prompts_path) as f:
        for idx, line in enumerate(f):
            prompt = line.strip()
            fn = os.path.join(image_dir, f"{prefix}_{idx:08d}.jpg")
            if idx % num_gpus != stride_idx:
                continue
            if os.path.exists(fn):
                continue
            img = (
                model(prompt, num_inference_steps=steps, generator=generator, guidance_scale=9)
                .images[0]
                .resize((512, 512))
            )
            img.save(fn)


def dedup_table(prompts: list[str]) -> pd.DataFrame:
    """data/dedup/S.parquet's shape: `prompt` raw, `text` the cleaned caption (not what reference renders)."""
    return pd.DataFrame(
        {
            "id": [f"op-{i}" for i in range(len(prompts))],
            "prompt": prompts,
            "text": [f"cleaned caption {i}" for i in range(len(prompts))],
        }
    )


def images(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(folder).glob("*.jpg"))}


def test_reference_preset_writes_the_team_loops_bytes_and_names(tiny_model_dir, tmp_path):
    from PIL import Image

    (tmp_path / "prompts.txt").write_text("".join(p + "\n" for p in RAW), encoding="utf-8")
    team_loop(tiny_model_dir, tmp_path / "prompts.txt", tmp_path / "team", "openprompts")
    theirs = images(tmp_path / "team")
    assert list(theirs) == ["openprompts_00000000.jpg", "openprompts_00000001.jpg", "openprompts_00000002.jpg"]

    out = tmp_path / "openprompts"
    # batch 2, not the preset's 1: the noise is drawn per row, so batching changes no byte (fp64)
    s = Generate(model=str(tiny_model_dir), preset="reference", batch_size=2)
    counts = generate(dedup_table(RAW), s, out)
    assert counts["rendered"] == 3 and counts["pipeline_calls"] == 2
    assert images(out) == theirs and len(set(theirs.values())) == 3

    default_q = io.BytesIO()
    Image.new("RGB", (8, 8)).save(default_q, "JPEG")  # PIL's default quality, as img.save(fn) used
    with Image.open(out / "openprompts_00000001.jpg") as image:
        assert image.format == "JPEG" and image.size == (512, 512)
        assert image.quantization == Image.open(default_q).quantization  # quality 75 tables
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert list(manifest["file"]) == list(theirs) and list(manifest["draw"]) == [0, 1, 2]
    settings = json.loads(manifest["settings"][0])
    assert settings["preset"] == "reference" and settings["prompt_field"] == "prompt"
    assert (settings["steps"], settings["scheduler_class"], settings["height"], settings["resize"]) == (
        50,
        "DPMSolverMultistepScheduler",
        64,
        512,
    )  # the tiny model's own scheduler and size


def test_a_resumed_run_gives_the_bytes_of_an_uninterrupted_one(tiny_model_dir, tmp_path):
    """Rows already rendered are drawn and dropped, so the others keep their noise (the team's own
    resume skipped the draw and shifted every later image)."""
    out, store = tmp_path / "openprompts", tmp_path / "store"
    s = Generate(model=str(tiny_model_dir), preset="reference", steps=4)
    generate(dedup_table(RAW), s, tmp_path / "whole", prefix="openprompts")
    whole = images(tmp_path / "whole")
    generate(dedup_table(RAW), s, out, store=store)
    key = pd.read_parquet(out / "manifest.parquet")["key"][1]
    (out / "openprompts_00000001.jpg").unlink()
    (store / key[:2] / f"{key}.jpg").unlink()
    counts = generate(dedup_table(RAW), s, out, store=store)
    assert (counts["rendered"], counts["reused"]) == (1, 2) and images(out) == whole
    shutil.rmtree(out)  # as DVC does before the stage runs: every image comes back from the store
    counts = generate(dedup_table(RAW), s, out, store=store)
    assert (counts["rendered"], counts["from_store"]) == (0, 3) and images(out) == whole
    (out / "openprompts_00000002.jpg").unlink()  # a hard link into the store: replace it, never write into it
    (out / "openprompts_00000002.jpg").write_bytes(whole["openprompts_00000000.jpg"])  # wrong image, no manifest
    journal = "".join(f"{name}\t{hashlib.sha256((out / name).read_bytes()).hexdigest()}\n" for name in whole)
    (out / JOURNAL).write_text(journal, encoding="utf-8")  # as a killed run leaves it: names, what it wrote there
    (out / "manifest.parquet").unlink()
    counts = generate(dedup_table(RAW), s, out, store=store)
    assert counts["from_store"] == 3 and images(out) == whole  # names are trusted only through the manifest


def test_noise_streams_are_the_teams_one_process_per_gpu(tiny_model_dir, tmp_path):
    prompts = RAW + ["an owl on a branch"]
    (tmp_path / "p.txt").write_text("".join(p + "\n" for p in prompts), encoding="utf-8")
    for stride in (0, 1):  # `--num-gpus 2 --stride-idx 0|1`, each process with its own generator
        team_loop(
            tiny_model_dir, tmp_path / "p.txt", tmp_path / "team", "chatgpt", num_gpus=2, stride_idx=stride, steps=4
        )
    s = Generate(model=str(tiny_model_dir), preset="reference", steps=4, noise_streams=2, batch_size=3)
    generate(dedup_table(prompts), s, tmp_path / "chatgpt")
    assert images(tmp_path / "chatgpt") == images(tmp_path / "team") and len(images(tmp_path / "team")) == 4
    one_stream = generate(dedup_table(prompts), s.replace(noise_streams=1), tmp_path / "one")
    assert one_stream["rendered"] == 4
    differ = [a != b for a, b in zip(images(tmp_path / "one").values(), images(tmp_path / "team").values())]
    assert differ == [False, True, True, True]  # row 0 is draw 0 either way


def test_sequential_keys_follow_the_row_position(tiny_model_dir):
    s = Generate(model=str(tiny_model_dir), preset="reference", height=64, width=64)
    table = dedup_table(RAW)
    keys = [j.key for j in plan_jobs(table, s, "m", "fp64", prefix="op")]
    later = [j.key for j in plan_jobs(table.iloc[1:], s, "m", "fp64", prefix="op")]
    assert not set(keys) & set(later)  # a dropped row moves every later row to another draw
    fast = s.replace(preset="fast")
    assert [j.key for j in plan_jobs(table.iloc[1:], fast, "m", "fp64")] == [
        j.key for j in plan_jobs(table, fast, "m", "fp64")
    ][1:]
    assert [j.file for j in plan_jobs(table, s, "m", "fp64", prefix="op")] == [f"op_{i:08d}.jpg" for i in range(3)]
    assert keys != [j.key for j in plan_jobs(table, s, "m", "fp64", prefix="op", device="cuda")]
    with pytest.raises(DataError, match="not usable as an image file prefix"):
        plan_jobs(table, s, "m", "fp64", prefix="../x")


def test_preset_fills_null_keys_and_explicit_keys_win():
    fast, reference = Generate(), Generate(preset="reference")
    assert {k: getattr(fast, k) for k in GENERATE_PRESETS["fast"]} == GENERATE_PRESETS["fast"]
    assert (
        reference.steps,
        reference.scheduler,
        reference.prompt_field,
        reference.noise,
        reference.quality,
        reference.resize,
        reference.resample,
        reference.file_names,
        reference.batch_size,
    ) == (50, "model", "prompt", "sequential", 75, 512, "bicubic", "index", 1)
    mixed = Generate(preset="reference", steps=20, scheduler=None, resize=False)
    assert (mixed.steps, mixed.scheduler, mixed.resize) == (20, "model", False)
    back = mixed.replace(preset="fast")  # preset-filled keys follow; set ones stay
    assert (back.steps, back.scheduler, back.resize, back.quality) == (20, "dpmpp", False, 95)
    shipped = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))["generate"]
    assert shipped["preset"] == "fast" and all(shipped[k] is None for k in GENERATE_PRESETS["fast"])
    assert Generate(**{**shipped, "preset": "reference"}).steps == 50  # `-S generate.preset=reference` is enough


def test_a_scheduler_that_draws_noise_is_refused(tiny_model_dir, tmp_path):
    model = tmp_path / "ancestral"
    shutil.copytree(tiny_model_dir, model)
    index = model / "model_index.json"  # the class the pipeline loads
    index.write_text(
        json.dumps({**json.loads(index.read_text()), "scheduler": ["diffusers", "EulerAncestralDiscreteScheduler"]})
    )
    with pytest.raises(DataError, match="EulerAncestralDiscreteScheduler draws noise at every step"):
        generate(dedup_table(RAW[:1]), Generate(model=str(model), preset="reference", steps=2), tmp_path / "out")
