"""A decoded image as a viewer shows it, for every writer that re-encodes or draws pixels: the webdataset
layout's `image_format`, the bucketed layout and the contact sheets; and its shown size, for every width
and height recorded from an image file (image_size, the SimpleTuner parquet).

PIL alone changed the picture at exit 0: `convert("RGB")` clips a 16-bit grey image (PNG, TIFF) to white;
a decode drops the EXIF orientation, so a phone's portrait photo was re-encoded lying on its side; a JPEG
written from it lost its colour profile (Display P3 shown as sRGB); and PNG cannot hold CMYK, so a CMYK
JPEG failed a PNG export. Pure functions: a PIL image in, an image, its shown size or bytes out; and
`opened`, the one way a command opens an image, so PIL's warnings never reach its stderr.
"""

from __future__ import annotations

import contextlib
import io
import re
import struct
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from scripts.lib import errors

GREY16 = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # 16-bit grey; PIL opens some 16-bit PNGs as "I"
PNG_MODES = ("1", "L", "LA", "P", "RGB", "RGBA", *GREY16)  # what PIL writes as PNG unconverted
RGB_FAMILY = ("RGB", "RGBA", "RGBX", "P", "PA")  # whose colour profile still describes them as RGB


# The formats of safe_paths.IMAGE_EXTENSIONS (PIL's JPEG opener also gives a phone's MPO, a JPEG with a
# second picture; "MPO" itself is no opener's name, and naming it fails every open). PIL opens some
# forty by their bytes, whatever the file's name: an EPS named 0.png was taken, and decoding it runs
# Ghostscript where one is installed; SGI, PCX, QOI, JPEG 2000 are decoders no source of ours needs.
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")


class TooManyPixels(errors.DataError):
    """An image over PIL's decompression bomb limit (its DecompressionBombError): one line naming the file."""

    reason = "image_too_large"  # counted under on_error: skip


class UnsupportedPixels(errors.DataError):
    """An image of samples no 8- or 16-bit picture shows as they are (check_pixel_format): one line naming it."""

    reason = "unsupported_pixel_format"


def check_pixel_format(image, name: str) -> None:
    """UnsupportedPixels for float samples (PIL mode F) or 32-bit or signed integer ones (mode I, but a 16-bit
    grey PNG, which older PIL opened as I): re-encoded, a float TIFF came out black, a 32-bit one saturated at
    65,535 (or failed, `cannot write mode I as PNG`). Which picture such values mean (0..1? 0..2**32?) is the
    writer's to say, not ours to guess: refused from the header, before any row records the image."""
    if image.mode == "F" or (image.mode == "I" and image.format != "PNG"):
        samples = "float" if image.mode == "F" else "32-bit or signed integer"
        raise UnsupportedPixels(
            f"{errors.shown(name)}: {samples} samples (PIL mode {image.mode}), an unsupported pixel format: "
            "no 8- or 16-bit picture shows them as they are"
        )


@contextlib.contextmanager
def opened(source, name: str) -> Iterator[Any]:
    """PIL's Image.open(source) (a path or a file object) of one of FORMATS, closed after the block, with PIL's
    warnings settled here rather than printed, in the block too (load, convert, exif_transpose): a stage's stderr is
    its own lines. Catching warnings is process-wide in Python 3.11: every caller decodes on its main thread.

    Each of PIL's warnings is silence, not a counted outcome, since none changes what the command does:
    - DecompressionBombWarning (over Image.MAX_IMAGE_PIXELS, 89M, under twice that): the command's own
      cap (max_image_pixels, archive.check_image_pixels) came first and counts what it refuses
      (`image_too_large`); an image under it is one the user allowed;
    - EXIF or TIFF tags PIL cannot read ("Corrupt EXIF data", "Tag data larger than file"): PIL skips the
      tag and the pixels decode; an orientation it cannot read leaves the image as stored, as viewers do;
    - "Palette images with Transparency expressed in bytes" (a convert to RGB): each pixel keeps its
      palette colour, as an RGBA conversion then dropping alpha would give;
    - a broken APNG or MPO part: PIL falls back to the first frame, the picture viewers show.
    Over twice the limit PIL refuses to decode (DecompressionBombError): TooManyPixels, naming `name`."""
    from PIL import Image

    with quiet_pil():
        try:
            with Image.open(source, formats=FORMATS) as image:
                yield image
        except Image.DecompressionBombError as exc:
            found = re.search(r"\((\d+) pixels\)", str(exc))
            count = f"{int(found[1]):,} pixels" if found else "too many pixels"
            raise TooManyPixels(
                f"{errors.shown(name)}: {count}, over PIL's decompression bomb limit of "
                f"{2 * (Image.MAX_IMAGE_PIXELS or 0):,}; refusing to decode it"
            ) from None


@contextlib.contextmanager
def quiet_pil() -> Iterator[None]:
    """PIL's warnings (each raised from a PIL module, as warnings.warn attributes them by default) settled
    in the block rather than printed; any other library's warning still shows. `opened` says why each is
    silence."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"PIL\.")
        yield


def upright(image):
    """`image` turned as its EXIF orientation says (a copy, the tag removed)."""
    from PIL import ImageOps

    return ImageOps.exif_transpose(image)


ORIENTATION = 0x0112  # the EXIF tag exif_transpose turns an image by
TURNED = (5, 6, 7, 8)  # orientations that turn the image a quarter: width and height change places
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def shown_size(image) -> tuple[int, int]:
    """(width, height) of `image` as `upright` shows it, from its header: a phone photo stored 4032x3024
    with orientation 6 is shown, and loaded by every trainer that applies exif_transpose, as 3024x4032. A
    broken EXIF block is no orientation (as a viewer shows it); a PNG is not decoded to look for one after its
    pixels (PIL's getexif would load them)."""
    if image.format == "PNG" and "exif" not in image.info:
        return image.size
    with quiet_pil():  # "Corrupt EXIF data": a line on a stage's stderr per image
        try:
            orientation = image.getexif().get(ORIENTATION)
        except MemoryError:  # a memory limit is no broken block: the size recorded would be the unturned one
            raise
        except Exception:  # PIL raises many kinds for a broken block (SyntaxError, struct.error, ValueError)
            orientation = None
    return turned(image.size, orientation)


def png_shown_size(head: bytes) -> tuple[int, int] | None:
    """shown_size of a PNG from its first bytes, without PIL's PNG parser (which refuses a head cut before
    the pixels): IHDR's size, turned by an eXIf chunk that comes before the pixels. None: not a PNG head."""
    if head[:8] != PNG_SIGNATURE or len(head) < 24:
        return None
    size, at = struct.unpack(">II", head[16:24]), 8
    while at + 8 <= len(head):
        length, kind = struct.unpack(">I4s", head[at : at + 8])
        if kind == b"IDAT" or (kind == b"eXIf" and at + 8 + length > len(head)):
            break  # no orientation before the pixels, or its block runs past the head
        if kind == b"eXIf":
            return turned(size, exif_orientation(head[at + 8 : at + 8 + length]))
        at += 12 + length
    return size


HEAD_BYTES = 65536  # of a JPEG or another format: its EXIF segment comes first, within 64 KiB
MAX_PNG_CHUNKS = 4096  # walked before the pixels; a PNG of more ancillary chunks keeps its stored size


def image_head(read_at: Callable[[int, int], bytes], limit: int = HEAD_BYTES) -> bytes:
    """The bytes that decide an image's shown size, through `read_at(offset, count)` (short at its end): of
    a PNG its signature, first chunk (IHDR), any eXIf before the pixels and the IDAT header, the other
    chunks skipped unread (a 200 KiB ICC profile before eXIf is no reason to read it, nor to miss the
    orientation after it); of any other image its first `limit` bytes. image_size reads either."""
    head = read_at(0, len(PNG_SIGNATURE))
    if head != PNG_SIGNATURE:
        return head + read_at(len(head), limit - len(head))
    at = len(head)
    for index in range(MAX_PNG_CHUNKS):
        header = read_at(at, 8)
        if len(header) < 8:
            return head + header
        length, kind = struct.unpack(">I4s", header)
        if kind == b"IDAT":
            return head + header
        if index == 0 or (kind == b"eXIf" and length <= HEAD_BYTES):
            head += header + read_at(at + 8, min(length + 4, HEAD_BYTES))  # the data and its CRC
        at += 12 + length
    return head


def image_size(head: bytes, name: str = "image") -> tuple[int, int] | None:
    """(width, height) as the image is shown (its EXIF orientation applied, shown_size) from the first
    bytes of a PNG, GIF or JPEG (or any PIL format), None if unknown; TooManyPixels (naming `name`) past PIL's
    decompression bomb limit. Every reader records it as the row's size: a phone photo stored 4032x3024
    with orientation 6 is 3024x4032 to every writer and trainer."""
    if head[:8] == PNG_SIGNATURE and len(head) >= 24:
        return png_shown_size(head)  # IHDR and eXIf: a head cut before the pixels is enough
    if head[:6] in GIF_SIGNATURES:
        return gif_shown_size(head)  # its screen grown to its first frame, as PIL decodes it
    try:
        with opened(io.BytesIO(head), name) as img:  # reads the header only
            check_pixel_format(img, name)
            return shown_size(img)
    except (TooManyPixels, UnsupportedPixels, MemoryError):  # a memory limit is no unknown size
        raise
    except Exception:
        return None


def stream_reader(stream) -> Callable[[int, int], bytes]:
    """image_head's `read_at` over a seekable binary stream (a file, a zip member: its seek inflates forward)."""

    def read_at(offset: int, count: int) -> bytes:
        stream.seek(offset)
        return stream.read(count)

    return read_at


GIF_SIGNATURES = (b"GIF87a", b"GIF89a")


def gif_shown_size(head: bytes) -> tuple[int, int] | None:
    """The size PIL decodes a GIF at, from its first bytes: the logical screen grown to hold the first frame.
    A frame may reach past the screen its header declares (1x1 holding a 7000x7000 frame): PIL then decodes
    the frame's whole extent, so the screen alone let such an image past the pixel cap with a size of 1x1.
    None: not a GIF, or its first frame is not within `head` (a reader's head cut before it)."""
    if head[:6] not in GIF_SIGNATURES or len(head) < 13:
        return None
    screen, flags, at = struct.unpack("<HH", head[6:10]), head[10], 13
    if flags & 0x80:  # a global colour table of 2^(n+1) RGB entries
        at += 3 << ((flags & 7) + 1)
    while at < len(head) and head[at] == 0x21:  # extensions: a label, then sub-blocks up to an empty one
        at += 2
        while at < len(head) and head[at]:
            at += head[at] + 1
        at += 1
    if at + 9 > len(head) or head[at] != 0x2C:  # no image descriptor where it must be
        return None
    left, top, width, height = struct.unpack("<HHHH", head[at + 1 : at + 9])
    return max(screen[0], left + width), max(screen[1], top + height)


def exif_orientation(block: bytes):
    """The orientation an EXIF block holds; None for none, or for a block PIL cannot read."""
    from PIL import Image

    with quiet_pil():
        try:
            exif = Image.Exif()
            exif.load(block)
            return exif.get(ORIENTATION)
        except MemoryError:  # as in shown_size
            raise
        except Exception:  # a broken block is no orientation, as in shown_size
            return None


def turned(size: tuple[int, int], orientation) -> tuple[int, int]:
    """`size` (width, height) as an image of this EXIF orientation is shown: swapped for 5 to 8 (a quarter
    turn, as exif_transpose applies it); any other value, or none, leaves it."""
    width, height = size
    return (height, width) if isinstance(orientation, int) and orientation in TURNED else (width, height)


def eight_bit(image):
    """16-bit grey scaled to 8 bits (0..65535 -> 0..255); any other image as it is."""
    if image.mode not in GREY16:
        return image
    import numpy as np
    from PIL import Image

    values = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
    return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8), "L")


def rgb(image, name: str = "image"):
    """`image` upright in 8-bit RGB: what a contact sheet or a resize draws (UnsupportedPixels: check_pixel_format)."""
    check_pixel_format(image, name)
    return eight_bit(upright(image)).convert("RGB")


def reencoded(image, image_format: str, quality: int = 95, name: str = "image") -> bytes:
    """PNG (the pixels as decoded: a mode PNG cannot hold becomes RGB or RGBA) or JPEG (8-bit RGB at
    `quality`) of `image` upright, with its colour profile where it still describes the pixels written.
    UnsupportedPixels, naming `name`, for samples neither shows as they are (check_pixel_format)."""
    check_pixel_format(image, name)
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
