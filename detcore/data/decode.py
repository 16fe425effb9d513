"""Decoding an image file into a uint8 ``[3, H, W]`` tensor, with the checks of :mod:`detcore.data.image_file`.

Two decoders: ``torchvision`` (the default) reads RGB JPEGs with ``torchvision.io.decode_jpeg``
(libjpeg-turbo, straight into a tensor: about 15% faster than Pillow on an 800x1333 photo, and no
copy from a PIL image), and everything else (PNG, grayscale or CMYK JPEGs, other formats) with
Pillow; ``pillow`` uses Pillow for every file. Both JPEG decoders are libjpeg-turbo with the same
settings (accurate integer IDCT, smooth chroma upsampling) and give the same pixels here (the unit
test and ``benchmarks/real_data.py`` compare them); builds of different libjpeg versions can differ
by a level or two in a few pixels, the tolerance any two JPEG decoders have.

The size limit is checked from the header before any pixel is decoded, whichever decoder runs.
"""
from __future__ import annotations

import os

import torch
from torchvision.transforms.v2 import functional as F

from detcore.config_values import DECODERS
from detcore.data.image_file import read_header, read_rgb
from detcore.errors import ConfigError


def check_decoder(decoder: str, where: str = "decoder") -> str:
    """``decoder`` if it is one of :data:`DECODERS`; else ConfigError naming ``where``."""
    if decoder not in DECODERS:
        raise ConfigError(f"{where} must be one of {', '.join(DECODERS)}; got {decoder!r}")
    return decoder


def decode_rgb(path: str | os.PathLike, context: str = "", decoder: str = "torchvision") -> torch.Tensor:
    """``path`` as an RGB uint8 tensor ``[3, H, W]``; DataError (naming the file, plus ``context``)
    for a missing, corrupt or over-large file."""
    if decoder == "torchvision":
        header = read_header(path, context)
        if header.format == "JPEG" and header.mode == "RGB":
            from torchvision.io import ImageReadMode, decode_jpeg, read_file

            try:
                image = decode_jpeg(read_file(os.fspath(path)), mode=ImageReadMode.RGB)
            except RuntimeError:  # a file libjpeg refuses: Pillow decodes it or names the problem
                image = None
            if image is not None and tuple(image.shape[-2:]) == (header.height, header.width):
                return image
    return F.pil_to_tensor(read_rgb(path, context))
