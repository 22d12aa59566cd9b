"""tiny_model stage: an offline, seeded, SD2-architecture pipeline small enough for CPU.

`dvc repro` must run on a laptop without network or GPU, so generate@S renders with a model we build
ourselves: the Stable Diffusion 2 layout (UNet2DConditionModel with cross-attention and linear
projections, AutoencoderKL with a 3-downsample VAE, CLIP text encoder, byte-level BPE tokenizer,
DPM-Solver++ with v-prediction) at toy widths, with seeded random weights. It draws noise, not art,
but it exercises every code path a real SD2 checkpoint does, and it is byte-for-byte reproducible:
two builds on two machines give the same files (and the same dvc.lock md5).

Knobs live in params.yaml `tiny_model:`; the command is `python -m scripts tiny-model OUT_DIR`.
"""

from __future__ import annotations

import itertools
import json
import os
from collections import Counter
from pathlib import Path

import typer

from scripts.lib.io import atomic_path, shown
from scripts.lib.nesting import loads_json
from scripts.lib.params import TinyModel, load_section, parse


def tiny_model_params(params: TinyModel | dict | None) -> TinyModel:
    """params.yaml `tiny_model:` as its model (a plain mapping is checked: one DataError naming the key)."""
    return params if isinstance(params, TinyModel) else parse(TinyModel, params or {}, at=("tiny_model",))


# Words we learn BPE merges from (the tokenizer is ours: no vocabulary download). Merges only change
# how text splits into tokens; any fixed corpus gives a valid byte-level tokenizer.
_MERGE_CORPUS = [
    "a",
    "an",
    "the",
    "of",
    "in",
    "on",
    "with",
    "and",
    "by",
    "at",
    "from",
    "to",
    "for",
    "as",
    "is",
    "are",
    "portrait",
    "photo",
    "painting",
    "illustration",
    "digital",
    "art",
    "concept",
    "character",
    "landscape",
    "city",
    "street",
    "night",
    "day",
    "light",
    "lighting",
    "dark",
    "bright",
    "sunset",
    "sunrise",
    "sky",
    "cloud",
    "clouds",
    "mountain",
    "mountains",
    "river",
    "lake",
    "ocean",
    "sea",
    "beach",
    "forest",
    "tree",
    "trees",
    "flower",
    "flowers",
    "garden",
    "house",
    "castle",
    "tower",
    "building",
    "room",
    "interior",
    "window",
    "door",
    "girl",
    "boy",
    "woman",
    "man",
    "people",
    "person",
    "face",
    "eyes",
    "hair",
    "dress",
    "armor",
    "sword",
    "dragon",
    "cat",
    "dog",
    "horse",
    "bird",
    "fish",
    "robot",
    "space",
    "planet",
    "star",
    "stars",
    "moon",
    "sun",
    "fire",
    "water",
    "ice",
    "snow",
    "rain",
    "fog",
    "smoke",
    "gold",
    "golden",
    "silver",
    "red",
    "blue",
    "green",
    "yellow",
    "purple",
    "orange",
    "black",
    "white",
    "pink",
    "colorful",
    "beautiful",
    "cute",
    "detailed",
    "highly",
    "intricate",
    "realistic",
    "photorealistic",
    "cinematic",
    "dramatic",
    "epic",
    "fantasy",
    "science",
    "fiction",
    "cyberpunk",
    "steampunk",
    "surreal",
    "abstract",
    "minimalist",
    "vintage",
    "retro",
    "modern",
    "ancient",
    "futuristic",
    "old",
    "young",
    "small",
    "big",
    "large",
    "tiny",
    "giant",
    "standing",
    "sitting",
    "walking",
    "running",
    "flying",
    "wearing",
    "holding",
    "looking",
    "smiling",
    "style",
    "render",
    "rendering",
    "design",
    "poster",
    "cover",
    "sketch",
    "drawing",
    "watercolor",
    "oil",
    "canvas",
    "anime",
    "cartoon",
    "comic",
    "studio",
    "photography",
    "camera",
    "lens",
    "close",
    "up",
    "wide",
    "shot",
    "view",
    "background",
    "foreground",
    "texture",
    "pattern",
    "glowing",
    "neon",
    "shadow",
    "shadows",
    "reflection",
]


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable unicode char table (byte-level BPE works on these chars)."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, map(chr, chars)))


def learn_bpe_merges(words: list[str], num_merges: int) -> list[tuple[str, str]]:
    """Classic BPE: repeatedly merge the most frequent adjacent pair (ties broken by the pair itself).

    Words are byte-level symbol sequences ending in a `</w>` symbol, as CLIP's tokenizer expects.
    """
    byte_chars = bytes_to_unicode()
    counts = Counter(words)
    vocab: dict[tuple[str, ...], int] = {}
    for word, count in counts.items():
        symbols = [byte_chars[b] for b in word.encode("utf-8")]
        symbols[-1] += "</w>"
        vocab[tuple(symbols)] = vocab.get(tuple(symbols), 0) + count
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs: Counter = Counter()
        for symbols, count in vocab.items():
            for pair in itertools.pairwise(symbols):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged: dict[tuple[str, ...], int] = {}
        for symbols, count in vocab.items():
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + count
        vocab = merged
    return merges


def build_tokenizer_files(num_merges: int) -> tuple[dict[str, int], list[str]]:
    """CLIP-layout vocab (bytes, bytes+</w>, merges, then the two special tokens) and merge lines."""
    merges = learn_bpe_merges(_MERGE_CORPUS, num_merges)
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    return vocab, [f"{a} {b}" for a, b in merges]


def build_pipeline(params: TinyModel | dict | None):
    """The SD2-layout pipeline with seeded random weights, in eval mode, on CPU in fp32."""
    import tempfile

    import torch
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()  # no progress bars or backend notes in the stage log
    transformers_logging.disable_progress_bar()
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    p = tiny_model_params(params)
    seed = p.seed

    vocab, merges = build_tokenizer_files(p.bpe_merges)
    with tempfile.TemporaryDirectory() as tmp:
        # The tokenizer is loaded from vocab.json + merges.txt we wrote, exactly as a hub checkpoint is.
        write_tokenizer_files(vocab, merges, Path(tmp))
        tokenizer = CLIPTokenizer.from_pretrained(tmp, model_max_length=77)

    vae_scale = 2 ** (len(p.vae_channels) - 1)
    latent_size = p.sample_size // vae_scale
    text_hidden = p.text_hidden
    unet_channels = tuple(p.unet_channels)
    n_blocks = len(unet_channels)

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=unet_channels,
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D",) * (n_blocks - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n_blocks - 1),
        cross_attention_dim=text_hidden,
        attention_head_dim=tuple(p.unet_heads),
        use_linear_projection=True,  # SD2 (SD1 used 1x1 convs)
        norm_num_groups=min(32, min(unet_channels)),
        act_fn="silu",
    )
    torch.manual_seed(seed + 1)
    vae_channels = tuple(p.vae_channels)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(vae_channels),
        block_out_channels=vae_channels,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=min(32, min(vae_channels)),
        sample_size=p.sample_size,
        scaling_factor=0.18215,
    )
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=text_hidden,
            intermediate_size=text_hidden * 4,
            num_hidden_layers=p.text_layers,
            num_attention_heads=p.text_heads,
            max_position_embeddings=77,
            hidden_act="gelu",  # SD2's OpenCLIP encoder (SD1's CLIP uses quick_gelu)
            projection_dim=text_hidden,
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
        )
    )
    # SD2's scheduler config, switched to DPM-Solver++ (v-prediction, like the 768-v checkpoint).
    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="v_prediction",
        algorithm_type="dpmsolver++",
        solver_order=2,
        steps_offset=1,
        timestep_spacing="leading",
    )
    pipe = StableDiffusionPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    return pipe


def save_tiny_model(params: TinyModel | dict | None, output: Path) -> None:
    """Build and save the pipeline atomically: readers see the old model or the complete new one."""
    p = tiny_model_params(params)
    pipe = build_pipeline(p)
    vocab, merges = build_tokenizer_files(p.bpe_merges)
    with atomic_path(output, is_dir=True) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        _strip_volatile_fields(tmp)
        # tokenizer.json already holds the vocab; the classic files keep older loaders working.
        write_tokenizer_files(vocab, merges, tmp / "tokenizer")
        for path in [tmp, *tmp.rglob("*")]:  # mkdtemp/mkstemp make private files; a model reads like any other
            os.chmod(path, 0o755 if path.is_dir() else 0o644)


def write_tokenizer_files(vocab: dict[str, int], merges: list[str], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False) + "\n", encoding="utf-8")
    # a line per merge: no merges (bpe_merges: 0) wrote an empty line the tokenizer refused in a traceback
    (directory / "merges.txt").write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges), encoding="utf-8")


# Fields transformers copies into a saved config from how it was loaded, not from the model: the build
# directory, and `local_files_only`, true whenever HF_HUB_OFFLINE is set in the building process.
_VOLATILE_FIELDS = ("_name_or_path", "local_files_only")


def _strip_volatile_fields(model_dir: Path) -> None:
    """Drop the load-time fields, so the bytes depend only on params (not on the directory or environment)."""
    for path in sorted(Path(model_dir).rglob("*.json")):
        data = loads_json(path.read_text(encoding="utf-8"), non_finite="keep")  # diffusers' own: it writes -Infinity
        if isinstance(data, dict) and any(field in data for field in _VOLATILE_FIELDS):
            for field in _VOLATILE_FIELDS:
                data.pop(field, None)
            path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def cli(output: Path = typer.Argument(..., help="directory to write the pipeline to (e.g. models/tiny-sd2)")) -> None:
    """Build the offline tiny SD2-architecture model from params.yaml `tiny_model`."""
    save_tiny_model(load_section("tiny_model"), output)
    print(shown(f"tiny-model: wrote {output}"))
