"""tiny_model stage: an SD2-layout pipeline with seeded weights, saved reproducibly and atomically."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import file_digests
from scripts.lib.errors import DataError
from scripts.lib.marks import mark_folder
from scripts.lib.params import TinyModel
from scripts.tiny_model import build_tokenizer_files, learn_bpe_merges, save_tiny_model

REPO = Path(__file__).resolve().parents[1]


def test_loads_as_an_sd2_pipeline_offline(tiny_model_dir):
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_model_dir, local_files_only=True)
    assert pipe.safety_checker is None and pipe.feature_extractor is None
    assert isinstance(pipe.scheduler, DPMSolverMultistepScheduler)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.scheduler.config.algorithm_type == "dpmsolver++"
    unet = pipe.unet.config
    assert unet.use_linear_projection and unet.cross_attention_dim == pipe.text_encoder.config.hidden_size
    assert "CrossAttnDownBlock2D" in unet.down_block_types
    assert pipe.vae_scale_factor == 8  # SD2's VAE downsampling
    assert not pipe.unet.training and not pipe.vae.training and not pipe.text_encoder.training


def test_renders_an_image_of_the_default_size(tiny_model_dir):
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_model_dir, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        "a red house by a lake", num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np"
    ).images
    assert out.shape == (1, TinyModel().sample_size, TinyModel().sample_size, 3)
    assert out.std() > 0.01  # random weights still give a non-constant image


def test_tokenizer_is_our_byte_level_bpe(tiny_model_dir):
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tiny_model_dir / "tokenizer")
    vocab = json.loads((tiny_model_dir / "tokenizer" / "vocab.json").read_text(encoding="utf-8"))
    assert len(tokenizer) == len(vocab) == 256 * 2 + TinyModel().bpe_merges + 2
    ids = tokenizer("A Beautiful Cat, 4k").input_ids
    assert ids[0] == vocab["<|startoftext|>"] and ids[-1] == vocab["<|endoftext|>"]
    assert "beautiful</w>" in tokenizer.convert_ids_to_tokens(ids)  # a learned merge, not single bytes
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a beautiful cat , 4 k"
    # byte-level: any unicode text encodes without unknown tokens
    assert tokenizer.unk_token_id not in tokenizer("ñandú 🐈 東京").input_ids[1:-1]


def test_bpe_learning_merges_the_most_frequent_pair_first():
    merges = learn_bpe_merges(["aab", "aab", "ab"], 2)
    assert merges[0] == ("a", "b</w>")  # (a, b</w>) occurs 3 times, (a, a) twice
    assert merges[1] == ("a", "ab</w>")
    vocab, lines = build_tokenizer_files(10)
    assert len(lines) == 10 and list(vocab)[-2:] == ["<|startoftext|>", "<|endoftext|>"]


def test_cli_build_is_byte_identical_to_another_build(tiny_model_dir, tmp_path):
    """Two builds (here: another process via the CLI, as dvc repro runs it) give the same bytes, whatever
    the environment says of the Hub: transformers records `local_files_only` (true offline) in a saved
    tokenizer config, which would make the model's hash differ between a laptop and an offline CI."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"tiny_model": TinyModel().model_dump()}), encoding="utf-8")
    offline = os.environ.get("HF_HUB_OFFLINE") != "1"  # the other state from this process's
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1" if offline else "0"}
    result = subprocess.run(
        [sys.executable, "-m", "scripts", "tiny-model", "models/tiny-sd2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    built = file_digests(tmp_path / "models" / "tiny-sd2")
    assert built == file_digests(tiny_model_dir)
    assert {
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "scheduler/scheduler_config.json",
        "model_index.json",
    } <= set(built)
    assert not any(name.endswith(".bin") for name in built)
    configs = [path.read_text(encoding="utf-8") for path in (tmp_path / "models" / "tiny-sd2").rglob("*.json")]
    assert not any("/tmp" in text or '"local_files_only"' in text for text in configs)


def test_a_different_seed_gives_different_weights(tmp_path, tiny_model_dir):
    save_tiny_model({"seed": 1}, tmp_path / "m")
    other = file_digests(tmp_path / "m")
    base = file_digests(tiny_model_dir)
    assert other["unet/diffusion_pytorch_model.safetensors"] != base["unet/diffusion_pytorch_model.safetensors"]
    assert other["unet/config.json"] == base["unet/config.json"]


def test_rebuild_replaces_the_old_model_whole(tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    (out / "stale.bin").write_bytes(b"old")
    mark_folder(out)  # the ownership marker of an earlier build (scripts/lib/io.py), as it writes it
    save_tiny_model({}, out)
    assert not (out / "stale.bin").exists() and (out / "model_index.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temp dir left beside it


def test_unknown_param_is_a_one_line_error(tmp_path):
    with pytest.raises(
        DataError, match=r"params.yaml: tiny_model: unknown key 'unet_chanels' \(did you mean 'unet_channels'\?\)"
    ):
        save_tiny_model({"unet_chanels": [8, 16]}, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_a_stage_process_runs_torch_on_the_same_cpu_paths_on_every_machine():
    """Importing `scripts` pins torch's CPU code paths (scripts/__init__.py): without it an AVX-512 machine
    (this project's CI has them) renders other last bits than an AVX2 one, and MKL picks by CPU vendor."""
    probe = "import scripts, os, torch; print(torch.backends.cpu.get_cpu_capability(), os.environ['MKL_CBWR'])"
    from scripts import TORCH_CPU_PATHS

    env = {k: v for k, v in os.environ.items() if k not in TORCH_CPU_PATHS}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    capability, cbwr = out.stdout.split()
    assert capability in {"AVX2", "DEFAULT"} and cbwr == "COMPATIBLE", out.stdout


RENDER_UNDER = """
import os, sys
import scripts  # pins torch's CPU paths; MKL_CBWR is set again below, before torch loads
os.environ["MKL_CBWR"] = sys.argv[1]
import pandas as pd
import torch
from scripts.generate import generate
from scripts.lib.params import Generate

torch.set_num_threads(1)
texts = [line for line in open(sys.argv[3], encoding="utf-8").read().splitlines() if line.strip()][:64]
table = pd.DataFrame({"id": [f"r{i}" for i in range(len(texts))], "text": texts, "prompt": texts})
generate(table, Generate(model=sys.argv[2], preset="fast"), sys.argv[4])
"""


@pytest.mark.slow  # 3 renders of 64 prompts: 23 s of CI; the slow tier keeps it
def test_renders_are_the_same_bytes_whichever_math_kernels_the_cpu_gets(tiny_model_dir, tmp_path):
    """MKL picks its kernels by processor (an Intel and an AMD machine take different paths); MKL_CBWR
    forces each path on this one. diffusers builds the scheduler's sigmas in float32 through those
    kernels, so their last bit moved with the path and, through the diffusion loop, pixel values of
    about one image in ten (this test's 64 prompts: some images differed on every run before)."""
    prompts = Path(__file__).parent / "fixtures" / "gpt4-prompts-3k.txt"
    folders = {}
    for path in ("COMPATIBLE", "AUTO", "AVX2"):
        folders[path] = tmp_path / path
        command = [sys.executable, "-c", RENDER_UNDER, path, str(tiny_model_dir), str(prompts), str(folders[path])]
        subprocess.run(command, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    rendered = {path: file_digests(folder) for path, folder in folders.items()}
    assert len(rendered["AUTO"]) == 65  # 64 images and the manifest
    assert rendered["AUTO"] == rendered["COMPATIBLE"] == rendered["AVX2"]
