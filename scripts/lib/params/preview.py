"""`preview`: contact sheets, previews and plots."""

from __future__ import annotations

from pydantic import (
    Field,
    model_validator,
)

from scripts.lib.params.base import Section


class Preview(Section):
    """Seeing the data. The contact sheet data/releases/V/preview.jpg is exactly `sheet_size`:
    (columns * thumb) x (rows * (thumb + caption_height)) pixels, at most 65,500 a side (JPEG).
    Captions use PIL's bitmap font (6 x 12 px a character)."""

    columns: int = Field(4, ge=1, le=100, description="images per row of the contact sheet")
    rows: int = Field(
        3, ge=1, le=100, description="rows of images (columns * rows sample rows: the first by sha256(id))"
    )
    thumb: int = Field(
        160, ge=16, le=4096, description="each image is fit into thumb x thumb pixels (up- or downscaled)"
    )
    caption_height: int = Field(
        48, ge=0, le=4096, description='pixels of caption under each image (a cut caption ends in "...")'
    )
    quality: int = Field(80, ge=1, le=100, description="JPEG quality of preview.jpg")
    dedup_clusters: int = Field(20, ge=1, le=100_000, description="largest clusters shown in data/dedup/S.preview.html")
    length_bin: int = Field(
        16, ge=1, le=100_000, description="caption length histogram bin, in characters (data/plots/prompt_lengths.csv)"
    )

    @property
    def sheet_size(self) -> tuple[int, int]:
        return self.columns * self.thumb, self.rows * (self.thumb + self.caption_height)

    @model_validator(mode="after")
    def _jpeg_fits(self) -> Preview:
        if max(self.sheet_size) > 65_500:
            width, height = self.sheet_size
            raise ValueError(f"the contact sheet would be {width}x{height} pixels (JPEG allows 65,500 a side)")
        return self
