"""Decoding image files with a size limit checked from the header, before any pixel is decoded.

The limit is :data:`DEFAULT_MAX_IMAGE_PIXELS` (8192 x 8192); raise it with the environment
variable ``DETCORE_MAX_IMAGE_PIXELS`` (also raises Pillow's own decompression-bomb limit,
which would otherwise refuse images above about 179 million pixels). Torch-free.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import cast

from PIL import Image

from detcore.errors import DataError

MAX_PIXELS_ENV = "DETCORE_MAX_IMAGE_PIXELS"
DEFAULT_MAX_IMAGE_PIXELS = 8192 * 8192


def max_image_pixels() -> int:
    """The pixel limit in force: ``DETCORE_MAX_IMAGE_PIXELS`` or the default."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise DataError(f"{MAX_PIXELS_ENV}={raw!r}: expected a positive whole number of pixels, e.g. 200000000")
    return value


def _too_large(path: Path, width: int, height: int, limit: int, context: str) -> DataError:
    return DataError(f"image {path}{context} is {width}x{height} ({width * height} pixels), above the limit of "
                     f"{limit} pixels; downscale it, or raise the limit with {MAX_PIXELS_ENV}={width * height}")


def _open(path: Path, context: str, limit: int, decode: bool) -> Image.Image | None:
    if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit  # the user raised our limit: Pillow's must not refuse first
    if not path.is_file():
        raise DataError(f"image file {path}{context} does not exist" + ("" if context else "; check the path"))
    try:
        with Image.open(path) as im:
            width, height = im.size
            if width * height > limit:
                raise _too_large(path, width, height, limit, context)
            if not decode:
                return None
            im.load()
            return im.convert("RGB")
    except Image.DecompressionBombError:
        # Pillow refuses from the header too; report it in our terms (its size is not on the error)
        raise DataError(f"image {path}{context} is larger than the limit of {limit} pixels; downscale it, or "
                        f"raise the limit with {MAX_PIXELS_ENV}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"image file {path}{context} is corrupt or not an image: {exc}") from None


def check_image_file(path: str | os.PathLike, context: str = "") -> None:
    """Read only the header of ``path``: DataError if it is missing, not an image or over the limit."""
    _open(Path(path), context, max_image_pixels(), decode=False)


def read_rgb(path: str | os.PathLike, context: str = "") -> Image.Image:
    """Decode ``path`` as an RGB PIL image. DataError (naming the file, plus ``context``) for a
    missing, corrupt or over-large file; the size is checked before decoding."""
    return cast(Image.Image, _open(Path(path), context, max_image_pixels(), decode=True))
