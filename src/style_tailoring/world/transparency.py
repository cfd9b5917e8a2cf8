"""Transparent images of many kinds, drawn procedurally: what the alpha decoder trains on, and the held-out kinds
it is tested on.

The world's own transparent stickers (render style "rgba") are one kind only: a white die-cut border and a drop
shadow around flat objects. A decoder trained on them alone learns that rendering, not transparency. Here each
image is drawn from independent choices, so a decoder has to read the matte from the pixels:
- shape family: ellipses, rounded rectangles, polygons (convex and star), smooth blobs, the world's objects; held
  out for testing: superformula shapes, rings (a shape with a hole) and letters;
- border: none, white (a die-cut), or coloured, of a random width;
- shadow: none, a drop shadow (translucent black, offset and blurred), or a glow;
- fill: flat, a two-colour gradient, or textured, of any colour (colours close to the background included, which
  defeats thresholding); opacity 1 or partial (a translucent fill);
- edge: hard, or feathered (a soft alpha ramp);
- one to three objects, of any size and position.
`draw(kind, rng)` returns one straight-alpha RGBA image (PIL, 32 px by default). `TRAIN` is the training mixture;
`TEST_KINDS` are three held-out kinds (`no_shadow_die_cut`, `borderless`, `translucent_rings`), each built only from
choices the training mixture never makes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from style_tailoring.io import atomic_dir, write_json

SUPER = 4  # drawn at 4x and downsampled: anti-aliased edges, as real PNGs have


@dataclass(frozen=True)
class Kind:
    families: tuple[str, ...]
    borders: tuple[str, ...] = ("none", "white", "coloured")
    shadows: tuple[str, ...] = ("none", "drop", "glow")
    fills: tuple[str, ...] = ("flat", "gradient", "texture")
    translucent: float = 0.2  # share of images with a partially transparent fill
    feathered: float = 0.3  # share of images with a soft alpha edge
    max_objects: int = 3


TRAIN = Kind(families=("ellipse", "rectangle", "polygon", "blob", "world"))
TEST_KINDS = {
    # The sticker a user brings: a white die-cut, flat colour, clear outside — no shadow, and a shape family the
    # training set never draws.
    "no_shadow_die_cut": Kind(families=("superformula",), borders=("white",), shadows=("none",), fills=("flat",),
                              translucent=0.0, feathered=0.0, max_objects=2),
    # A transparent shape with no border at all: hard edges, flat colour, letters and rings.
    "borderless": Kind(families=("glyph", "ring"), borders=("none",), shadows=("none",), fills=("flat",),
                       translucent=0.0, feathered=0.0, max_objects=2),
    # Partial transparency on a held-out family: translucent rings with feathered edges.
    "translucent_rings": Kind(families=("ring",), borders=("none",), shadows=("none", "glow"),
                              fills=("flat", "gradient"), translucent=1.0, feathered=1.0, max_objects=2),
}


def _mask(family: str, rng: np.random.Generator, big: int) -> np.ndarray:
    """A float mask in [0, 1] of one shape of `family` at a random size and place."""
    image = Image.new("L", (big, big), 0)
    d = ImageDraw.Draw(image)
    r = rng.uniform(0.15, 0.38) * big
    cx, cy = rng.uniform(r * 0.8, big - r * 0.8, 2)
    if family == "ellipse":
        a, b = r, r * rng.uniform(0.5, 1.0)
        d.ellipse((cx - a, cy - b, cx + a, cy + b), fill=255)
    elif family == "rectangle":
        a, b = r, r * rng.uniform(0.5, 1.0)
        d.rounded_rectangle((cx - a, cy - b, cx + a, cy + b), radius=float(rng.uniform(0, 0.4) * b), fill=255)
    elif family == "polygon":
        n = int(rng.integers(3, 9))
        star = rng.random() < 0.4
        angles = np.sort(rng.uniform(0, 2 * np.pi, n)) if not star else np.linspace(0, 2 * np.pi, 2 * n, False)
        radii = np.full(len(angles), r) if not star else np.where(np.arange(2 * n) % 2 == 0, r, r * 0.45)
        d.polygon([(cx + q * np.cos(t), cy + q * np.sin(t)) for t, q in zip(angles, radii)], fill=255)
    elif family == "blob":
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        q = r * (1 + sum(rng.uniform(-0.25, 0.25) * np.cos(k * t + rng.uniform(0, 6.3)) for k in (2, 3, 5)))
        d.polygon([(cx + a * np.cos(b), cy + a * np.sin(b)) for a, b in zip(q, t)], fill=255)
    elif family == "superformula":  # Gielis' superformula: shapes no other family draws
        m, n1, n2, n3 = int(rng.integers(3, 8)), rng.uniform(0.3, 2.0), rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0)
        t = np.linspace(0, 2 * np.pi, 180, endpoint=False)
        q = (np.abs(np.cos(m * t / 4)) ** n2 + np.abs(np.sin(m * t / 4)) ** n3) ** (-1 / n1)
        q = r * q / q.max()
        d.polygon([(cx + a * np.cos(b), cy + a * np.sin(b)) for a, b in zip(q, t)], fill=255)
    elif family == "ring":
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        hole = r * rng.uniform(0.35, 0.65)
        d.ellipse((cx - hole, cy - hole, cx + hole, cy + hole), fill=0)
    elif family == "glyph":
        font = ImageFont.load_default(size=int(2.2 * r))
        letter = "ABDEGHKMNPRSWXYZ"[int(rng.integers(16))]
        d.text((cx, cy), letter, fill=255, font=font, anchor="mm", stroke_width=int(r * 0.08))
    elif family == "world":
        from style_tailoring.world.grammar import sample_content
        from style_tailoring.world.render import render

        rgba = render(sample_content(rng), "rgba", rng)  # at the renderer's own 32 px, whatever `big` is
        return (np.asarray(rgba.resize((big, big), Image.BILINEAR), dtype=np.float64)[..., 3] / 255 > 0.9) * 1.0
    else:
        raise ValueError(f"unknown shape family {family!r}")
    return np.asarray(image, dtype=np.float64) / 255


def _colour(rng: np.random.Generator) -> np.ndarray:
    """Any colour; one in five close to the world's sticker background (which thresholding cannot tell apart)."""
    if rng.random() < 0.2:
        return np.clip(np.array([222, 224, 230]) + rng.normal(0, 12, 3), 0, 255)
    return rng.uniform(0, 255, 3)


def _fill(kind: str, rng: np.random.Generator, big: int) -> np.ndarray:
    base = _colour(rng)
    if kind == "flat":
        return np.broadcast_to(base, (big, big, 3)).copy()
    if kind == "gradient":
        other, angle = _colour(rng), rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:big, 0:big] / big
        t = np.clip(0.5 + (np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5)), 0, 1)[..., None]
        return base * (1 - t) + other * t
    cells = -(-big // 8)  # 8-pixel noise cells, cropped to the image
    noise = rng.normal(0, 25, (cells, cells, 1)).repeat(8, 0).repeat(8, 1)[:big, :big]
    return np.clip(base + noise, 0, 255)


def _shift(mask: np.ndarray, pixels: int) -> np.ndarray:
    """`mask` moved down and right by `pixels`, zero where it moved from (np.roll would wrap the shadow of a shape
    cut by one edge round to the opposite edge)."""
    out = np.zeros_like(mask)
    out[pixels:, pixels:] = mask[:mask.shape[0] - pixels, :mask.shape[1] - pixels]
    return out


def _grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    image = Image.fromarray((mask * 255).astype(np.uint8)).filter(ImageFilter.MaxFilter(2 * pixels + 1))
    return np.asarray(image, dtype=np.float64) / 255


def _blur(mask: np.ndarray, radius: float) -> np.ndarray:
    image = Image.fromarray((mask * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(radius))
    return np.asarray(image, dtype=np.float64) / 255


def draw(kind: Kind, rng: np.random.Generator, size: int = 32) -> Image.Image:
    """One straight-alpha RGBA image of `kind`: layers composited over nothing, downsampled with an area filter."""
    big = size * SUPER
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    layers = []  # (alpha, colour) bottom to top
    for _ in range(int(rng.integers(1, kind.max_objects + 1))):
        shape = _mask(pick(kind.families), rng, big).astype(np.float64)
        border, shadow = pick(kind.borders), pick(kind.shadows)
        width = int(rng.integers(1, 4)) * SUPER // 2
        outer = _grow(shape, width) if border != "none" else shape
        if shadow == "drop":
            offset = int(rng.integers(1, 3)) * SUPER
            layers.append((0.45 * _blur(_shift(outer, offset), SUPER),
                           np.zeros((big, big, 3))))
        elif shadow == "glow":
            layers.append((0.5 * _blur(_grow(outer, SUPER), 2 * SUPER), np.broadcast_to(_colour(rng), (big, big, 3))))
        if border != "none":
            colour = np.full(3, 255.0) if border == "white" else _colour(rng)
            layers.append((outer, np.broadcast_to(colour, (big, big, 3))))
        opacity = rng.uniform(0.3, 0.8) if rng.random() < kind.translucent else 1.0
        edge = _blur(shape, rng.uniform(1, 2.5) * SUPER) if rng.random() < kind.feathered else shape
        layers.append((opacity * edge, _fill(pick(kind.fills), rng, big)))
    premultiplied, alpha = np.zeros((big, big, 3)), np.zeros((big, big, 1))
    for a, colour in layers:
        a = a[..., None]
        premultiplied = premultiplied * (1 - a) + colour * a
        alpha = alpha * (1 - a) + a
    small = [np.asarray(Image.fromarray(c.astype(np.float32)).resize((size, size), Image.BOX))
             for c in (*np.moveaxis(premultiplied, -1, 0), alpha[..., 0])]
    small = np.stack(small, -1).astype(np.float64)
    a = np.round(np.clip(small[..., 3:], 0, 1) * 255)  # alpha as stored; colour 0 where it is 0
    colour = np.where(a > 0, small[..., :3] / np.maximum(a / 255, 1e-6), 0.0)
    return Image.fromarray(np.round(np.concatenate([np.clip(colour, 0, 255), a], -1)).astype(np.uint8))


def write_set(out_dir, kind: Kind, n: int, seed: int, size: int = 32) -> Path:
    """`n` images of `kind` as RGBA PNGs in `out_dir` (a folder the alpha decoder's data readers take), atomically;
    image i is the i-th draw of one generator seeded `seed`."""
    rng = np.random.default_rng(seed)
    with atomic_dir(Path(out_dir)) as tmp:
        for i in range(n):
            draw(kind, rng, size).save(tmp / f"{i:05d}.png")
    return Path(out_dir)


TRAIN_SIZE, VAL_SIZE, TEST_SIZE = 3000, 256, 96
TEST_SEED = 777  # the committed test sets' seed (kind i of TEST_KINDS: TEST_SEED + i), whatever the world's seed
TEST_SETS = "alpha_test_sets"  # their folder in the assets


def test_sets_about() -> dict:
    """What assets/sticker_world/alpha_test_sets/about.json records: how each held-out kind was drawn."""
    return {"what": "held-out transparent stickers for the alpha decoder: straight-alpha RGBA PNGs, 32 px, of kinds "
                    "built only from shape families the training mixture (alpha_varied) never draws",
            "kinds": {kind: {"seed": TEST_SEED + i, "images": TEST_SIZE, "families": list(spec.families),
                             "borders": list(spec.borders), "shadows": list(spec.shadows),
                             "fills": list(spec.fills), "translucent": spec.translucent,
                             "feathered": spec.feathered, "max_objects": spec.max_objects}
                      for i, (kind, spec) in enumerate(TEST_KINDS.items())},
            "training_families": list(TRAIN.families),
            "generator": "style_tailoring.world.transparency: write_set(folder, TEST_KINDS[kind], images, seed)",
            "command": "python -m style_tailoring.world only=alpha_sets"}


def build_alpha_sets(data_dir, assets_dir, seed: int = 0, force: bool = False) -> dict:
    """The alpha decoder's procedural data (world step `alpha_sets`): data_dir/alpha_varied (TRAIN_SIZE images of
    the training mixture, seed `seed`: for training), data_dir/alpha_varied_val (VAL_SIZE more, seed + 1: where a
    training recipe is chosen), and the held-out kinds in assets_dir/alpha_test_sets/<kind> (TEST_SIZE each, seed
    TEST_SEED + i: committed; about.json records how). Each is written when missing or of the wrong size, or always
    with `force`. Returns {name: folder}."""
    data_dir, tests = Path(data_dir), Path(assets_dir) / TEST_SETS
    folders = {"alpha_varied": (data_dir / "alpha_varied", TRAIN, TRAIN_SIZE, seed),
               "alpha_varied_val": (data_dir / "alpha_varied_val", TRAIN, VAL_SIZE, seed + 1),
               **{kind: (tests / kind, spec, TEST_SIZE, TEST_SEED + i) for i, (kind, spec) in
                  enumerate(TEST_KINDS.items())}}
    for folder, kind, n, kind_seed in folders.values():
        if force or len(list(folder.glob("*.png"))) != n:
            write_set(folder, kind, n, kind_seed)
    about = test_sets_about()
    if force or not (tests / "about.json").is_file() or json.loads((tests / "about.json").read_text()) != about:
        write_json(tests / "about.json", about)
    return {name: spec[0] for name, spec in folders.items()}
