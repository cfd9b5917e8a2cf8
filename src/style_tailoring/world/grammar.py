"""The Sticker World's prompt grammar: independent attributes composed into captions like "two red stars on grass".

Four attributes, each recognisable at 32 px: how many objects, their colour, their shape, and the scene around
them (a prop: grass under them or a sun beside them, or none). A caption states count, colour and shape, and may
name the scene or leave it open — an open scene is what a good model varies, like the composition a prompt never
mentions. `parse_caption` inverts a caption (ignoring any style phrase after a comma), so judges know what a prompt
asks; `scene` is None when the prompt leaves it open.
The composition (position, scale, rotation, arrangement of two objects) is never named: the renderer draws it, and
the layout judge reads it back to measure scene diversity.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import product
from typing import Optional

import numpy as np

COUNTS = ("one", "two")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
SUBJECTS = ("circle", "square", "triangle", "star", "heart")
SCENES = ("none", "grass", "sun")
# The attributes a caption can ask for; "scene" only when it names one.
ATTRIBUTES: dict[str, tuple[str, ...]] = {"count": COUNTS, "colour": COLOURS, "subject": SUBJECTS, "scene": SCENES}
CONTENT_ATTRIBUTES = ("count", "colour", "subject")  # the combinations held out for evaluation
SCENE_PHRASES = {"grass": "on grass", "sun": "with a sun"}

# Composition classes: what the layout judge predicts and the layout diversity counts. "position" is the offset of
# the objects' centre (3 × 3 grid), "arrangement" how two objects sit relative to each other (one object: "single").
LAYOUT: dict[str, tuple[str, ...]] = {
    "position": tuple(f"{y}-{x}" for y in ("top", "middle", "bottom") for x in ("left", "centre", "right")),
    "scale": ("small", "medium", "large"),
    "rotation": ("left", "upright", "right"),
    "arrangement": ("single", "horizontal", "vertical", "diagonal"),
}

RGB = {
    "red": (214, 40, 40),
    "green": (46, 160, 67),
    "blue": (40, 90, 220),
    "yellow": (240, 200, 30),
    "purple": (140, 60, 180),
    "orange": (245, 130, 30),
}


@dataclass(frozen=True)
class Content:
    count: str
    colour: str
    subject: str
    scene: Optional[str] = None  # None: the caption leaves the scene open

    def as_dict(self) -> dict:
        return asdict(self)

    def base(self) -> "Content":
        """The same content with the scene left open (held-out combinations are defined on these)."""
        return Content(self.count, self.colour, self.subject)


def caption(content: Content) -> str:
    noun = content.subject + ("s" if content.count != "one" else "")
    text = f"{content.count} {content.colour} {noun}"
    return f"{text} {SCENE_PHRASES[content.scene]}" if content.scene in SCENE_PHRASES else text


def parse_caption(text: str) -> Optional[Content]:
    """The content a caption asks for, or None if it is not a full world caption (e.g. a weak label)."""
    words = text.split(",")[0].strip().lower().split()
    scene = None
    for name, phrase in SCENE_PHRASES.items():
        tail = phrase.split()
        if words[-len(tail):] == tail and len(words) == 3 + len(tail):
            scene, words = name, words[:3]
    if len(words) != 3:
        return None
    count, colour, noun = words
    subject = noun[:-1] if count != "one" and noun.endswith("s") else noun
    if count not in COUNTS or colour not in COLOURS or subject not in SUBJECTS:
        return None
    if (count == "one") == noun.endswith("s"):
        return None
    return Content(count, colour, subject, scene)


def all_contents() -> list[Content]:
    """Every count × colour × shape combination, scene left open."""
    return [Content(*values) for values in product(COUNTS, COLOURS, SUBJECTS)]


def sample_content(rng: np.random.Generator, allowed: Optional[list[Content]] = None) -> Content:
    pool = allowed if allowed is not None else all_contents()
    return pool[int(rng.integers(len(pool)))]


def vocabulary() -> list[str]:
    words = {*COUNTS, *COLOURS, *SUBJECTS, *(s + "s" for s in SUBJECTS)}
    words |= {word for phrase in SCENE_PHRASES.values() for word in phrase.split()}
    return sorted(words | {"sticker", "white", "border", "photo"})


def held_out_contents() -> list[Content]:
    """Eval-only combinations: every colour, subject and count appears in training, never these combinations."""
    contents = all_contents()
    # A fixed Latin-square-like pick: for each colour, two subjects, alternating counts.
    picked = []
    for i, colour in enumerate(COLOURS):
        for j in range(2):
            subject = SUBJECTS[(i + 2 * j) % len(SUBJECTS)]
            count = COUNTS[(i + j) % len(COUNTS)]
            picked.append(Content(count, colour, subject))
    assert all(c in contents for c in picked)
    return picked


def eval_prompt_contents() -> list[Content]:
    """The 24 evaluation prompts: each held-out combination once with its scene left open (what the model should
    vary) and once naming a scene (alternately grass and sun), so alignment also tests the scene."""
    named = [SCENES[1 + i % 2] for i in range(len(held_out_contents()))]
    return [*held_out_contents(), *(Content(c.count, c.colour, c.subject, s)
                                    for c, s in zip(held_out_contents(), named))]
