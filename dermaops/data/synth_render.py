"""Drawing of generated dermoscopy images: lesion-like shapes whose look depends on diagnosis.

A lesion is drawn once as an RGBA layer; each photograph of it places that layer on freshly
drawn skin with its own rotation, scale, offset, lighting, blur and hairs, the way repeated
dermoscopy photographs of one lesion differ. Every class draws from overlapping colour and
shape distributions, and a share of lesions borrow another class's palette, so the classes
are learnable but not trivially separable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

WIDTH, HEIGHT = 600, 450
_LAYER = 560  # side of the square canvas a lesion is drawn on

RGB = tuple[float, float, float]


@dataclass(frozen=True)
class ClassStyle:
    """How one diagnosis tends to look: palette, size, border, texture strengths."""

    centre: RGB
    edge: RGB
    accents: tuple[RGB, ...]
    radius: tuple[float, float]
    irregularity: tuple[float, float]
    elongation: tuple[float, float]
    edge_softness: tuple[float, float]
    network: float = 0.0
    blotches: float = 0.0
    dots: int = 0
    vessels: int = 0
    lacunae: int = 0
    scales: float = 0.0
    white_centre: float = 0.0
    ridges: float = 0.0


STYLES: dict[str, ClassStyle] = {
    "nv": ClassStyle(
        centre=(0.42, 0.26, 0.16), edge=(0.60, 0.42, 0.30), accents=((0.30, 0.18, 0.11),),
        radius=(72, 150), irregularity=(0.01, 0.06), elongation=(0.80, 1.0),
        edge_softness=(0.02, 0.05), network=0.35, dots=6,
    ),
    "mel": ClassStyle(
        centre=(0.22, 0.13, 0.10), edge=(0.50, 0.32, 0.24),
        accents=((0.10, 0.08, 0.08), (0.42, 0.47, 0.58), (0.70, 0.32, 0.30), (0.86, 0.80, 0.80)),
        radius=(104, 208), irregularity=(0.07, 0.20), elongation=(0.55, 0.90),
        edge_softness=(0.03, 0.09), network=0.30, blotches=0.55, dots=14,
    ),
    "bkl": ClassStyle(
        centre=(0.55, 0.40, 0.27), edge=(0.68, 0.52, 0.38),
        accents=((0.40, 0.28, 0.18), (0.90, 0.86, 0.78)),
        radius=(78, 176), irregularity=(0.03, 0.10), elongation=(0.70, 0.95),
        edge_softness=(0.06, 0.14), dots=4, ridges=0.22,
    ),
    "bcc": ClassStyle(
        centre=(0.82, 0.58, 0.58), edge=(0.86, 0.66, 0.62), accents=((0.45, 0.50, 0.62),),
        radius=(65, 150), irregularity=(0.04, 0.12), elongation=(0.70, 0.95),
        edge_softness=(0.05, 0.12), blotches=0.35, vessels=7,
    ),
    "akiec": ClassStyle(
        centre=(0.76, 0.42, 0.38), edge=(0.82, 0.55, 0.50), accents=((0.93, 0.89, 0.85),),
        radius=(65, 162), irregularity=(0.05, 0.14), elongation=(0.65, 0.95),
        edge_softness=(0.08, 0.16), scales=0.55, vessels=2,
    ),
    "df": ClassStyle(
        centre=(0.88, 0.82, 0.76), edge=(0.58, 0.40, 0.28), accents=((0.50, 0.33, 0.22),),
        radius=(49, 98), irregularity=(0.01, 0.05), elongation=(0.80, 1.0),
        edge_softness=(0.04, 0.08), network=0.20, white_centre=0.8,
    ),
    "vasc": ClassStyle(
        centre=(0.62, 0.14, 0.24), edge=(0.72, 0.30, 0.36),
        accents=((0.40, 0.10, 0.30), (0.80, 0.25, 0.30)),
        radius=(46, 110), irregularity=(0.02, 0.08), elongation=(0.80, 1.0),
        edge_softness=(0.02, 0.06), lacunae=9,
    ),
}  # fmt: skip


def draw_lesion(
    style: ClassStyle, rng: np.random.Generator, mimic: ClassStyle | None
) -> Image.Image:
    """Draw one lesion as an RGBA layer (alpha is the lesion's extent)."""
    half = _LAYER / 2
    yy, xx = np.mgrid[0:_LAYER, 0:_LAYER].astype(np.float32) - half
    radius = rng.uniform(*style.radius)
    elongation = rng.uniform(*style.elongation)
    theta = np.arctan2(yy, xx)
    wobble = sum(
        rng.uniform(0, style.irregularity[1]) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        for k in range(2, 7)
    )
    border = radius * (1.0 + rng.uniform(*style.irregularity) * 2 * wobble)
    t = np.hypot(xx, yy / elongation) / np.maximum(border, 1.0)
    softness = rng.uniform(*style.edge_softness)
    alpha = 1.0 / (1.0 + np.exp(np.clip((t - 1.0) / softness, -50, 50)))
    alpha *= np.clip((half - np.hypot(xx, yy)) / 24.0, 0, 1)  # never a straight canvas edge

    centre, edge = _jitter(style.centre, rng), _jitter(style.edge, rng)
    if mimic is not None:
        w = rng.uniform(0.3, 0.6)
        centre = _mix(centre, mimic.centre, w)
        edge = _mix(edge, mimic.edge, w)
    ramp = np.clip(t, 0, 1)[..., None] ** rng.uniform(0.8, 2.0)
    colour = np.asarray(centre) * (1 - ramp) + np.asarray(edge) * ramp
    colour *= 1.0 + 0.08 * smooth_noise(rng, (_LAYER, _LAYER), 6)[..., None]
    colour = _textures(colour, style, rng, xx, yy, t)
    colour = _draw_marks(colour, style, rng, radius)
    rgba = np.dstack([np.clip(colour, 0, 1), alpha]) * 255.0
    return Image.fromarray(rgba.astype(np.uint8))


def photograph(lesion: Image.Image, skin: RGB, rng: np.random.Generator) -> Image.Image:
    """One dermoscopy photograph of a lesion layer on freshly drawn skin."""
    background = _skin(skin, rng)
    scale = rng.uniform(0.85, 1.15)
    side = round(_LAYER * scale)
    layer = lesion.rotate(rng.uniform(0, 360), Image.Resampling.BILINEAR).resize((side, side))
    canvas = Image.fromarray((background * 255).astype(np.uint8))
    offset = rng.integers(-40, 41, size=2)
    canvas.paste(
        layer, (int((WIDTH - side) / 2 + offset[0]), int((HEIGHT - side) / 2 + offset[1])), layer
    )
    if rng.random() < 0.35:
        draw_hairs(canvas, rng)
    pixels = np.asarray(canvas, dtype=np.float32) / 255.0
    pixels *= rng.uniform(0.88, 1.12) * (1.0 + rng.normal(0, 0.03, size=3))
    if rng.random() < 0.5:
        pixels *= _dermoscope_ring(rng)[..., None]
    image = Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8))
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.3)))


def _textures(
    colour: np.ndarray, style: ClassStyle, rng: np.random.Generator,
    xx: np.ndarray, yy: np.ndarray, t: np.ndarray,
) -> np.ndarray:  # fmt: skip
    inside = np.clip(1.2 - t, 0, 1)[..., None]
    if style.network:
        freq = rng.uniform(0.25, 0.45)
        warp = smooth_noise(rng, xx.shape, 5) * rng.uniform(1.0, 4.0)
        net = np.sin(xx * freq + warp) * np.sin(yy * freq - warp)
        lines = (net > 0.55).astype(np.float32)[..., None]
        colour = colour * (1 - rng.uniform(0.3, 1.0) * style.network * lines * inside)
    if style.blotches:
        fields = np.stack([smooth_noise(rng, xx.shape, 4) for _ in style.accents])
        pick = fields.argmax(axis=0)
        accent = np.asarray([_jitter(a, rng) for a in style.accents])[pick]
        strong = (fields.max(axis=0) > 0.2).astype(np.float32)[..., None]
        colour = (
            colour + (accent - colour) * strong * inside * rng.uniform(0.4, 1.0) * style.blotches
        )
    if style.scales:
        flakes = (smooth_noise(rng, xx.shape, 24) > 0.35).astype(np.float32)[..., None]
        white = np.asarray(style.accents[0])
        colour = colour + (white - colour) * flakes * inside * rng.uniform(0.5, 1.0) * style.scales
    if style.white_centre:
        blob = np.exp(-((t / rng.uniform(0.3, 0.5)) ** 2))[..., None]
        colour = colour + (np.array([0.93, 0.88, 0.84]) - colour) * blob * style.white_centre
    if style.ridges:
        angle = rng.uniform(0, np.pi)
        warp = smooth_noise(rng, xx.shape, 6) * 3.0
        ridge = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * rng.uniform(0.2, 0.35) + warp)
        colour = colour * (1.0 + style.ridges * ridge[..., None] * inside)
    return colour


def _draw_marks(
    colour: np.ndarray, style: ClassStyle, rng: np.random.Generator, radius: float
) -> np.ndarray:
    """Dots, vessels and lacunae, drawn with PIL onto the colour field."""
    if not (style.dots or style.vessels or style.lacunae):
        return colour
    image = Image.fromarray((np.clip(colour, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    half = _LAYER / 2

    def spot() -> tuple[float, float]:
        r, a = radius * np.sqrt(rng.uniform(0, 0.7)), rng.uniform(0, 2 * np.pi)
        return half + r * np.cos(a), half + r * np.sin(a)

    accent = _rgb255(style.accents[0])
    for _ in range(rng.integers(0, style.dots + 1)):
        x, y = spot()
        s = rng.uniform(2, 6)
        draw.ellipse((x - s, y - s, x + s, y + s), fill=accent)
    for _ in range(rng.integers(style.vessels // 2, style.vessels + 1)):
        x, y = spot()
        points = [(x, y)]
        for _ in range(rng.integers(3, 8)):
            x, y = x + rng.normal(0, radius / 5), y + rng.normal(0, radius / 5)
            points.append((x, y))
        draw.line(points, fill=_rgb255((0.68, 0.10, 0.14)), width=int(rng.integers(1, 4)))
    for _ in range(rng.integers(style.lacunae // 2, style.lacunae + 1)):
        x, y = spot()
        s = rng.uniform(6, 20)
        tone = style.accents[int(rng.integers(0, len(style.accents)))]
        draw.ellipse((x - s, y - s, x + s, y + s), fill=_rgb255(_jitter(tone, rng)))
    return np.asarray(image, dtype=np.float32) / 255.0


def _skin(tone: RGB, rng: np.random.Generator) -> np.ndarray:
    base = np.asarray(tone, dtype=np.float32)
    mottling = 1.0 + 0.05 * smooth_noise(rng, (HEIGHT, WIDTH), 5)[..., None]
    grain = rng.normal(0, 0.012, size=(HEIGHT, WIDTH, 1)).astype(np.float32)
    return np.clip(base * mottling + grain, 0, 1)


def draw_hairs(canvas: Image.Image, rng: np.random.Generator) -> None:
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(1, 7)):
        x, y = rng.uniform(0, WIDTH), rng.uniform(0, HEIGHT)
        angle = rng.uniform(0, 2 * np.pi)
        points = []
        for _ in range(12):
            angle += rng.normal(0, 0.15)
            x, y = x + 25 * np.cos(angle), y + 25 * np.sin(angle)
            points.append((x, y))
        draw.line(points, fill=(40, 28, 22), width=int(rng.integers(1, 3)))


def _dermoscope_ring(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    d = np.hypot(xx - WIDTH / 2, yy - HEIGHT / 2) / (WIDTH * rng.uniform(0.42, 0.6))
    ring: np.ndarray = 1.0 / (1.0 + np.exp((d - 1.0) / 0.03))
    return ring


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Smooth noise in about -1..1: a random ``cells`` grid upsampled bicubically."""
    grid = rng.uniform(-1, 1, size=(cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(grid).resize(shape[::-1], Image.Resampling.BICUBIC))


def _jitter(colour: RGB, rng: np.random.Generator, sd: float = 0.05) -> RGB:
    r, g, b = np.clip(np.asarray(colour) + rng.normal(0, sd, size=3), 0, 1)
    return float(r), float(g), float(b)


def _mix(a: RGB, b: RGB, w: float) -> RGB:
    return (a[0] * (1 - w) + b[0] * w, a[1] * (1 - w) + b[1] * w, a[2] * (1 - w) + b[2] * w)


def _rgb255(colour: RGB) -> tuple[int, int, int]:
    return int(colour[0] * 255), int(colour[1] * 255), int(colour[2] * 255)
