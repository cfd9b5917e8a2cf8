"""The Sticker World's prompt grammar: independent attributes composed into captions like "two red stars".

Three attributes, each recognisable at 32 px: how many objects, their colour, and their shape. A caption states
all three; `parse_caption` inverts it (ignoring any style phrase after a comma), so judges know what a prompt asks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import product
from typing import Optional

import numpy as np

COUNTS = ("one", "two")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
SUBJECTS = ("circle", "square", "triangle", "star", "heart")
ATTRIBUTES: dict[str, tuple[str, ...]] = {"count": COUNTS, "colour": COLOURS, "subject": SUBJECTS}

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

    def as_dict(self) -> dict:
        return asdict(self)


def caption(content: Content) -> str:
    noun = content.subject + ("s" if content.count != "one" else "")
    return f"{content.count} {content.colour} {noun}"


def parse_caption(text: str) -> Optional[Content]:
    """The content a caption asks for, or None if it is not a full world caption (e.g. a weak label)."""
    words = text.split(",")[0].strip().lower().split()
    if len(words) != 3:
        return None
    count, colour, noun = words
    subject = noun[:-1] if count != "one" and noun.endswith("s") else noun
    if count not in COUNTS or colour not in COLOURS or subject not in SUBJECTS:
        return None
    if (count == "one") == noun.endswith("s"):
        return None
    return Content(count, colour, subject)


def all_contents() -> list[Content]:
    return [Content(*values) for values in product(COUNTS, COLOURS, SUBJECTS)]


def sample_content(rng: np.random.Generator, allowed: Optional[list[Content]] = None) -> Content:
    pool = allowed if allowed is not None else all_contents()
    return pool[int(rng.integers(len(pool)))]


def vocabulary() -> list[str]:
    words = {*COUNTS, *COLOURS, *SUBJECTS, *(s + "s" for s in SUBJECTS)}
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
