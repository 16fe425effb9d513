"""One colour per class, the same in every drawing, and a text colour that reads on it (pure).

Classes 1..20 get a fixed set of well-separated colours (strong hues first, pale ones last, so
a dataset with few classes gets the most distinct ones); later classes get colours generated
from their label (golden-ratio hue steps at cycling saturation and brightness; the first 80 are
at least 25 RGB units apart), so any number of classes is coloured deterministically.
"""
from __future__ import annotations

import colorsys

Color = tuple[int, int, int]

BASE: tuple[Color, ...] = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
    (240, 50, 230), (210, 245, 60), (255, 225, 25), (0, 128, 128), (170, 110, 40), (128, 0, 0),
    (0, 0, 128), (128, 128, 0), (250, 190, 212), (220, 190, 255), (170, 255, 195), (255, 215, 180),
    (128, 128, 128), (255, 250, 200),
)
OUTLINE: Color = (16, 16, 16)
BLACK: Color = (0, 0, 0)
WHITE: Color = (255, 255, 255)
_GOLDEN = 0.618033988749895


def class_color(label: int) -> Color:
    """The colour of class ``label`` (1-based, as detcore's labels are; 0 and negatives wrap to the base set)."""
    index = int(label) - 1
    if 0 <= index < len(BASE):
        return BASE[index]
    if index < 0:
        return BASE[index % len(BASE)]
    k = index - len(BASE)
    hue = (0.43 + k * _GOLDEN) % 1.0
    saturation = (1.0, 0.7, 0.45)[k % 3]
    value = (0.95, 0.8, 0.6, 0.45)[k % 4]
    r, g, b = colorsys.hsv_to_rgb(hue, saturation, value)
    return round(r * 255), round(g * 255), round(b * 255)


def relative_luminance(color: Color) -> float:
    """WCAG 2 relative luminance of an sRGB colour (0 black .. 1 white)."""
    def channel(c: int) -> float:
        c = c / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in color)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(a: Color, b: Color) -> float:
    """WCAG 2 contrast ratio of two colours (1 .. 21; 4.5 is the bar for normal text)."""
    la, lb = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def text_color_on(fill: Color) -> Color:
    """Black or white, whichever contrasts more with ``fill`` (at least 4.5:1 for every colour)."""
    return BLACK if contrast_ratio(BLACK, fill) >= contrast_ratio(WHITE, fill) else WHITE
