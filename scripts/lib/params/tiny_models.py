"""`tiny_model` and `tiny_encoder`: the offline random-weight models tests and the default run use."""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    Field,
    model_validator,
)

from scripts.lib.params.base import Section, Seed

Channels = Annotated[int, Field(ge=1, le=4096)]


class TinyModel(Section):
    """The offline SD2-architecture model with seeded random weights. Rules: unet_heads has one entry per
    unet_channels entry and divides it; text_heads divides text_hidden; channels are multiples of their
    norm group size (min(32, smallest channel)); sample_size is a multiple of the total downsampling."""

    seed: Seed = Field(0, description="torch seed of the random weights")
    unet_channels: list[Channels] = Field(
        [16, 32], min_length=1, max_length=6, description="UNet block widths (SD2: [320, 640, 1280, 1280])"
    )
    unet_heads: list[Channels] = Field(
        [1, 2], min_length=1, max_length=6, description="attention heads per UNet block (SD2: [5, 10, 20, 20], 64 wide)"
    )
    vae_channels: list[Channels] = Field(
        [4, 4, 8, 8], min_length=1, max_length=6, description="VAE block widths; 4 blocks = 8x downsampling, like SD2"
    )
    text_hidden: int = Field(32, ge=1, le=4096, description="text encoder width (SD2, OpenCLIP ViT-H: 1024)")
    text_layers: int = Field(2, ge=1, le=48, description="text encoder layers")
    text_heads: int = Field(4, ge=1, le=64, description="text encoder attention heads")
    bpe_merges: int = Field(400, ge=0, le=20_000, description="byte-level BPE merges learned from a fixed word list")
    sample_size: int = Field(64, ge=8, le=2048, description="default image side in pixels")

    @model_validator(mode="after")
    def _shapes(self) -> TinyModel:
        if len(self.unet_heads) != len(self.unet_channels):
            raise ValueError(f"unet_heads needs one entry per unet_channels entry ({len(self.unet_channels)})")
        for c, h in zip(self.unet_channels, self.unet_heads):
            if c % h:
                raise ValueError(f"unet_heads: {h} heads do not divide {c} channels")
        for key in ("unet_channels", "vae_channels"):
            channels = getattr(self, key)
            group = min(32, min(channels))
            if any(c % group for c in channels):
                raise ValueError(f"{key}: every width must be a multiple of {group} (the norm group size)")
        if self.text_hidden % self.text_heads:
            raise ValueError(f"text_heads = {self.text_heads} does not divide text_hidden = {self.text_hidden}")
        scale = 2 ** (len(self.vae_channels) - 1) * 2 ** (len(self.unet_channels) - 1)
        if self.sample_size % scale:
            raise ValueError(f"sample_size = {self.sample_size} is not a multiple of {scale} (VAE x UNet downsampling)")
        return self


class TinyEncoder(Section):
    """The offline sentence encoder with seeded random weights (all-MiniLM-L6-v2's layout: BERT, WordPiece,
    mean pooling, L2 norm). Rule: heads divides hidden."""

    seed: Seed = Field(0, description="torch seed of the random weights")
    hidden: int = Field(32, ge=2, le=4096, description="embedding width (all-MiniLM-L6-v2: 384)")
    layers: int = Field(2, ge=1, le=48, description="transformer layers (all-MiniLM-L6-v2: 6)")
    heads: int = Field(4, ge=1, le=64, description="attention heads (all-MiniLM-L6-v2: 12)")
    max_seq_length: int = Field(
        128, ge=8, le=512, description="tokens per text, longer texts are cut (all-MiniLM-L6-v2: 256)"
    )

    @model_validator(mode="after")
    def _shapes(self) -> TinyEncoder:
        if self.hidden % self.heads:
            raise ValueError(f"heads = {self.heads} does not divide hidden = {self.hidden}")
        return self
