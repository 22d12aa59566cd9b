"""A decoded image as a viewer shows it, for every writer that re-encodes or draws pixels: the webdataset
layout's `image_format`, the bucketed layout and the contact sheets.

PIL alone changed the picture at exit 0: `convert("RGB")` clips a 16-bit grey image (PNG, TIFF) to white;
a decode drops the EXIF orientation, so a phone's portrait photo was re-encoded lying on its side; a JPEG
written from it lost its colour profile (Display P3 shown as sRGB); and PNG cannot hold CMYK, so a CMYK
JPEG failed a PNG export. Pure functions: a PIL image in, an image or bytes out.
"""

from __future__ import annotations

import io

GREY16 = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # 16-bit grey; PIL opens some 16-bit PNGs as "I"
PNG_MODES = ("1", "L", "LA", "P", "RGB", "RGBA", *GREY16)  # what PIL writes as PNG unconverted
RGB_FAMILY = ("RGB", "RGBA", "RGBX", "P", "PA")  # whose colour profile still describes them as RGB


def upright(image):
    """`image` turned as its EXIF orientation says (a copy, the tag removed)."""
    from PIL import ImageOps

    return ImageOps.exif_transpose(image)


def eight_bit(image):
    """16-bit grey scaled to 8 bits (0..65535 -> 0..255); any other image as it is."""
    if image.mode not in GREY16:
        return image
    import numpy as np
    from PIL import Image

    values = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
    return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8), "L")


def rgb(image):
    """`image` upright in 8-bit RGB: what a contact sheet or a resize draws."""
    return eight_bit(upright(image)).convert("RGB")


def reencoded(image, image_format: str, quality: int = 95) -> bytes:
    """PNG (the pixels as decoded: a mode PNG cannot hold becomes RGB or RGBA) or JPEG (8-bit RGB at
    `quality`) of `image` upright, with its colour profile where it still describes the pixels written."""
    profile = image.info.get("icc_profile")
    shown = upright(image)
    if image_format == "png":
        if shown.mode not in PNG_MODES:  # CMYK, YCbCr, LAB: the profile was theirs, not the RGB pixels'
            shown, profile = shown.convert("RGBA" if "A" in shown.getbands() else "RGB"), None
    else:
        profile = profile if image.mode in RGB_FAMILY else None
        shown = eight_bit(shown).convert("RGB")
    buffer = io.BytesIO()
    if image_format == "png":
        shown.save(buffer, format="PNG", icc_profile=profile)
    else:
        shown.save(buffer, format="JPEG", quality=quality, icc_profile=profile)
    return buffer.getvalue()
