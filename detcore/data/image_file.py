"""Image files: names confined to their folder, and decoding with a size limit checked from the
header, before any pixel is decoded.

The limit is :data:`DEFAULT_MAX_IMAGE_PIXELS` (8192 x 8192); raise it with the environment
variable ``DETCORE_MAX_IMAGE_PIXELS`` (also raises Pillow's own decompression-bomb limit,
which would otherwise refuse images above about 179 million pixels). Torch-free.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple, cast

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


def file_name_problem(name: Any) -> str | None:
    """Why ``name`` (an annotation's image file name) cannot name a file inside its image folder
    (a phrase such as "an absolute path, which leaves the image folder"); None when it can.

    A name must stay inside the folder by its words alone: relative, no ``..`` part, no NUL
    byte. Symbolic links are not resolved here: a link the user placed inside the folder (a
    dataset folder made of links into a shared store) is followed when the image is opened, as
    intended, while an annotation file cannot reach ``../../../etc/hostname`` or ``/etc/hostname``.
    ``..`` is refused even where it cancels out (``a/../b.png``): if ``a`` is a link, the system
    resolves ``a/..`` to the link target's parent, outside the folder.
    """
    if not isinstance(name, str) or not name.strip():
        return "not a non-empty relative path"
    if "\x00" in name:
        return "a path with a NUL byte"
    if name.startswith("/"):
        return "an absolute path, which leaves the image folder"
    if ".." in name.split("/"):
        return "a path with a '..' part, which leaves the image folder"
    return None


def check_pixels(path: str | os.PathLike, width: int, height: int, context: str = "") -> None:
    """DataError when a ``width`` x ``height`` image (as a header or an annotation file says) is over the limit."""
    limit = max_image_pixels()
    if width * height > limit:
        raise _too_large(Path(path), width, height, limit, context)


def _too_large(path: Path, width: int, height: int, limit: int, context: str) -> DataError:
    return DataError(f"image {path}{context} is {width}x{height} ({width * height} pixels), above the limit of "
                     f"{limit} pixels; downscale it, or raise the limit with {MAX_PIXELS_ENV}={width * height}")


class ImageHeader(NamedTuple):
    """What an image file's header says: its size, Pillow's format name (``JPEG``, ``PNG``, ...) and mode."""

    width: int
    height: int
    format: str | None
    mode: str


def _open(path: Path, context: str, limit: int, decode: bool) -> Image.Image | ImageHeader:
    """The decoded RGB image (``decode``) or the header alone."""
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
                return ImageHeader(width, height, im.format, im.mode)
            im.load()
            return im.convert("RGB")
    except Image.DecompressionBombError:
        # Pillow refuses from the header too; report it in our terms (its size is not on the error)
        raise DataError(f"image {path}{context} is larger than the limit of {limit} pixels; downscale it, or "
                        f"raise the limit with {MAX_PIXELS_ENV}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"image file {path}{context} is corrupt or not an image: {exc}") from None


def check_image_file(path: str | os.PathLike, context: str = "") -> tuple[int, int]:
    """``(width, height)`` from the header of ``path`` alone; DataError if it is missing, not an
    image or over the limit."""
    header = read_header(path, context)
    return header.width, header.height


def read_header(path: str | os.PathLike, context: str = "") -> ImageHeader:
    """The header of ``path`` (nothing decoded); DataError if it is missing, not an image or over the limit."""
    return cast(ImageHeader, _open(Path(path), context, max_image_pixels(), decode=False))


def read_rgb(path: str | os.PathLike, context: str = "") -> Image.Image:
    """Decode ``path`` as an RGB PIL image. DataError (naming the file, plus ``context``) for a
    missing, corrupt or over-large file; the size is checked before decoding."""
    return cast(Image.Image, _open(Path(path), context, max_image_pixels(), decode=True))
