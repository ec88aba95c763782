"""Generated images the classifier should not judge, and lesions it still should.

The out-of-distribution guard (:mod:`dermaops.model.guard`) is measured on four kinds of image a
dermoscopy service is sent by mistake, drawn here at the generated set's 600 x 450:

- ``flat_colour``: a blank or badly exposed frame, one colour with a soft gradient and noise;
- ``text_screenshot``: a screenshot of a page or a form, lines of text on a plain background;
- ``natural_texture``: wood, grass, brick, gravel, water, sky;
- ``plain_skin``: a clinical (non-dermoscopic) close-up of skin without a lesion: pores, fine
  lines, a light from one side, no dermoscope ring.

And two kinds that must pass, made from held-out lesions: ``rotated_lesion`` (turned by any angle,
the corners filled by reflection) and ``cropped_lesion`` (a zoom on 70-90 % of the frame).
Like the generated set, none of this is a patient and no figure measured on it is clinical.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from dermaops.data.synth_render import HEIGHT, WIDTH, draw_hairs, smooth_noise
from dermaops.errors import DermaOpsError

OOD_KINDS: Final = ("flat_colour", "text_screenshot", "natural_texture", "plain_skin")
LESION_KINDS: Final = ("rotated_lesion", "cropped_lesion")

_WORDS = (
    "patient", "referral", "dermatology", "clinic", "appointment", "invoice", "total", "summary",
    "report", "page", "settings", "upload", "image", "name", "date", "submit", "cancel",
    "account", "password", "review", "status", "pending", "approved", "note", "history",
    "medication", "allergy", "address", "phone", "email", "follow-up", "results", "normal",
)  # fmt: skip


class OodKindError(DermaOpsError):
    """An unknown kind of generated image was asked for."""


def ood_images(kind: str, n: int, seed: int = 0) -> list[Image.Image]:
    """``n`` generated images of one out-of-distribution ``kind`` (RGB, 600 x 450)."""
    draw = _DRAWERS.get(kind)
    if draw is None:
        raise OodKindError(f"unknown kind {kind!r}: choose one of {', '.join(OOD_KINDS)}")
    return [draw(np.random.default_rng([seed, OOD_KINDS.index(kind), i])) for i in range(n)]


def lesion_variants(kind: str, images: list[np.ndarray], seed: int = 0) -> list[Image.Image]:
    """Held-out lesions (uint8 H x W x 3) turned (``rotated_lesion``) or zoomed
    (``cropped_lesion``): still dermoscopy, the guard must let them through."""
    if kind not in LESION_KINDS:
        raise OodKindError(f"unknown kind {kind!r}: choose one of {', '.join(LESION_KINDS)}")
    change = _rotated if kind == "rotated_lesion" else _cropped
    return [
        change(Image.fromarray(pixels), np.random.default_rng([seed, 7 + i]))
        for i, pixels in enumerate(images)
    ]


def _rotated(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Turned by 20-340 degrees about the centre; the corners reflect the image, no black."""
    w, h = image.size
    pad = (w + h) // 2
    padded = np.pad(np.asarray(image), ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    turned = Image.fromarray(padded).rotate(rng.uniform(20, 340), Image.Resampling.BILINEAR)
    return turned.crop((pad, pad, pad + w, pad + h))


def _cropped(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """70-90 % of the frame around a point near the centre, scaled back to the frame's size."""
    w, h = image.size
    share = rng.uniform(0.7, 0.9)
    cw, ch = w * share, h * share
    left = rng.uniform(0, w - cw)
    top = rng.uniform(0, h - ch)
    box = (round(left), round(top), round(left + cw), round(top + ch))
    return image.crop(box).resize((w, h), Image.Resampling.BICUBIC)


def _flat_colour(rng: np.random.Generator) -> Image.Image:
    """One colour (any, or the grey of an unexposed frame) with a soft gradient and sensor noise."""
    colour = rng.uniform(0, 1, 3) if rng.random() < 0.7 else np.full(3, rng.uniform(0, 1))
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (xx / WIDTH * np.cos(angle) + yy / HEIGHT * np.sin(angle)) * rng.uniform(0, 0.25)
    pixels = colour * (1 + ramp[..., None]) + rng.normal(0, 0.015, (HEIGHT, WIDTH, 3))
    return _image(pixels)


def _text_screenshot(rng: np.random.Generator) -> Image.Image:
    """A page: a title bar, lines of words, now and then a button, light or dark."""
    dark = rng.random() < 0.3
    paper = (30, 32, 36) if dark else tuple(int(v) for v in rng.integers(235, 256, 3))
    ink = (220, 222, 226) if dark else tuple(int(v) for v in rng.integers(0, 60, 3))
    image = Image.new("RGB", (WIDTH, HEIGHT), paper)
    draw = ImageDraw.Draw(image)
    bar = tuple(int(v) for v in rng.integers(0, 200, 3))
    draw.rectangle((0, 0, WIDTH, 34), fill=bar)
    draw.text((12, 6), _phrase(rng, 3).title(), fill=(255, 255, 255), font=_font(20))
    size = int(rng.integers(12, 22))
    font = _font(size)
    y = 48
    while y < HEIGHT - size:
        if rng.random() < 0.12:
            box = (16, y, 16 + int(rng.integers(80, 180)), y + size + 10)
            draw.rounded_rectangle(box, radius=5, fill=bar)
            draw.text((box[0] + 8, y + 4), _phrase(rng, 1), fill=(255, 255, 255), font=font)
            y += size + 18
            continue
        draw.text((16, y), _phrase(rng, int(rng.integers(3, 12))), fill=ink, font=font)
        y += int(size * rng.uniform(1.3, 1.8))
    return image


def _natural_texture(rng: np.random.Generator) -> Image.Image:
    texture = _TEXTURES[int(rng.integers(0, len(_TEXTURES)))]
    return texture(rng)


def _wood(rng: np.random.Generator) -> Image.Image:
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    warp = smooth_noise(rng, (HEIGHT, WIDTH), 4) * rng.uniform(8, 20)
    rings = np.sin((yy + warp + 0.02 * xx * rng.uniform(-1, 1)) * rng.uniform(0.15, 0.4))
    light, dark = np.array([0.72, 0.52, 0.32]), np.array([0.45, 0.28, 0.14])
    tone = (rings[..., None] + 1) / 2
    return _image(dark + (light - dark) * tone * rng.uniform(0.8, 1.1))


def _grass(rng: np.random.Generator) -> Image.Image:
    base = np.array([0.22, 0.42, 0.14]) * rng.uniform(0.7, 1.3)
    image = _image(np.broadcast_to(base, (HEIGHT, WIDTH, 3)).copy())
    draw = ImageDraw.Draw(image)
    for _ in range(900):
        x, y = rng.uniform(0, WIDTH), rng.uniform(0, HEIGHT)
        length, lean = rng.uniform(15, 60), rng.uniform(-0.4, 0.4)
        shade = np.clip(base * rng.uniform(0.5, 1.8), 0, 1)
        end = (x + lean * length, y - length)
        draw.line([(x, y), end], fill=_rgb(shade), width=int(rng.integers(1, 4)))
    return image


def _brick(rng: np.random.Generator) -> Image.Image:
    mortar = np.array([0.75, 0.73, 0.7]) * rng.uniform(0.8, 1.1)
    image = _image(np.broadcast_to(mortar, (HEIGHT, WIDTH, 3)).copy())
    draw = ImageDraw.Draw(image)
    bw, bh = int(rng.integers(60, 110)), int(rng.integers(22, 40))
    for row, y in enumerate(range(0, HEIGHT, bh)):
        for x in range(-bw + (row % 2) * bw // 2, WIDTH, bw):
            red = np.clip(np.array([0.62, 0.25, 0.18]) * rng.uniform(0.75, 1.25), 0, 1)
            draw.rectangle((x + 3, y + 3, x + bw - 3, y + bh - 3), fill=_rgb(red))
    return image.filter(ImageFilter.GaussianBlur(0.8))


def _gravel(rng: np.random.Generator) -> Image.Image:
    image = Image.new("RGB", (WIDTH, HEIGHT), _rgb(np.full(3, rng.uniform(0.3, 0.5))))
    draw = ImageDraw.Draw(image)
    for _ in range(1400):
        x, y, r = rng.uniform(0, WIDTH), rng.uniform(0, HEIGHT), rng.uniform(3, 12)
        grey = rng.uniform(0.3, 0.85) * np.array([1.0, 0.97, 0.9])
        draw.ellipse((x - r, y - r * 0.8, x + r, y + r * 0.8), fill=_rgb(grey))
    return image


def _water(rng: np.random.Generator) -> Image.Image:
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    warp = smooth_noise(rng, (HEIGHT, WIDTH), 6) * 6
    waves = np.sin(yy * rng.uniform(0.2, 0.5) + warp + np.sin(xx * 0.05) * 2)
    blue = np.array([0.12, 0.35, 0.55]) * rng.uniform(0.7, 1.3)
    return _image(blue * (1 + 0.35 * waves[..., None]))


def _sky(rng: np.random.Generator) -> Image.Image:
    clouds = np.clip(sum(smooth_noise(rng, (HEIGHT, WIDTH), c) / c**0.5 for c in (3, 6, 12)), 0, 1)
    blue = np.array([0.35, 0.58, 0.88]) * rng.uniform(0.8, 1.1)
    return _image(blue + (np.array([0.96, 0.96, 0.98]) - blue) * clouds[..., None])


_TEXTURES: tuple[Callable[[np.random.Generator], Image.Image], ...] = (
    _wood, _grass, _brick, _gravel, _water, _sky,
)  # fmt: skip


def _plain_skin(rng: np.random.Generator) -> Image.Image:
    """A close-up of skin as a phone takes it: no lesion, pores, fine lines, side light."""
    tone = np.clip(np.array([0.86, 0.66, 0.56]) * rng.uniform(0.75, 1.08) + rng.normal(0, 0.02, 3),
                   0, 1)  # fmt: skip
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    light = 1 + rng.uniform(0.1, 0.3) * (xx / WIDTH * np.cos(angle) + yy / HEIGHT * np.sin(angle))
    mottling = 1 + 0.06 * smooth_noise(rng, (HEIGHT, WIDTH), 8)
    dots = Image.fromarray(((rng.random((HEIGHT, WIDTH)) < 0.004) * 255).astype(np.uint8))
    pores = np.asarray(dots.filter(ImageFilter.GaussianBlur(1.2)), np.float32) / 255
    pixels = tone * (light * mottling)[..., None] * (1 - 2.5 * pores[..., None])
    image = _image(pixels + rng.normal(0, 0.01, (HEIGHT, WIDTH, 3)))
    draw = ImageDraw.Draw(image)
    crease = _rgb(tone * 0.8)
    for _ in range(int(rng.integers(6, 20))):
        x, y = rng.uniform(0, WIDTH), rng.uniform(0, HEIGHT)
        direction = rng.uniform(-0.3, 0.3) + angle
        points = [(x, y)]
        for _ in range(6):
            direction += rng.normal(0, 0.2)
            x, y = x + 30 * np.cos(direction), y + 30 * np.sin(direction)
            points.append((x, y))
        draw.line(points, fill=crease, width=1)
    if rng.random() < 0.5:
        draw_hairs(image, rng)
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))


_DRAWERS: dict[str, Callable[[np.random.Generator], Image.Image]] = {
    "flat_colour": _flat_colour,
    "text_screenshot": _text_screenshot,
    "natural_texture": _natural_texture,
    "plain_skin": _plain_skin,
}


def _phrase(rng: np.random.Generator, words: int) -> str:
    return " ".join(str(w) for w in rng.choice(_WORDS, size=words))


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _image(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8))


def _rgb(colour: np.ndarray) -> tuple[int, int, int]:
    r, g, b = (int(v * 255) for v in np.clip(colour, 0, 1))
    return r, g, b
