"""Shared fixtures: small real image folders and a composed training config pointing at them."""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from style_tailoring.config import to_run_config

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40)}
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def write_folder(root: Path, n: int, seed: int, sticker: bool, captions: str = "jsonl") -> Path:
    """n 32 px images of coloured squares/circles, photo-ish (noisy background) or sticker-ish (flat, outlined)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        colour = list(COLOURS)[rng.integers(len(COLOURS))]
        shape = ["square", "circle"][rng.integers(2)]
        bg = np.full((32, 32, 3), 245, np.uint8) if sticker else rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        im = Image.fromarray(bg)
        from PIL import ImageDraw

        draw = ImageDraw.Draw(im)
        box = (8, 8, 24, 24)
        outline = (255, 255, 255) if sticker else None
        (draw.rectangle if shape == "square" else draw.ellipse)(box, fill=COLOURS[colour], outline=outline,
                                                                width=3 if sticker else 0)
        name = f"{i:04d}.png"
        im.save(root / name)
        text = f"a {colour} {shape}" + (" sticker" if sticker else "")
        if captions == "txt":
            (root / name).with_suffix(".txt").write_text(text)
        rows.append({"file_name": name, "text": text})
    if captions == "jsonl":
        (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def png_claiming(path, width: int, height: int) -> None:
    """A small valid PNG whose header claims width × height pixels: what a decompression bomb looks like to
    Image.open (which reads the header only); the pixel data is never reached."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 255).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4:ihdr + 13])))
    path.write_bytes(bytes(data))


@pytest.fixture(scope="session")
def data_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    return {
        "domain": write_folder(root / "domain", 24, 0, sticker=True, captions="txt"),
        "alignment": write_folder(root / "alignment", 24, 1, sticker=False),
        "style": write_folder(root / "style", 16, 2, sticker=True),
    }


def make_cfg(data_dirs, run_dir: Path, *overrides: str):
    """The real composed config (conf/train.yaml) on the test folders, validated into the schema."""
    base = [
        "data=folder", "logger=csv", "trainer.max_steps=4", "data.batch_size=4", "eval.enabled=false",
        f"run_dir={run_dir}", f"paths.root_dir={run_dir.parent}",
        *(f"data.{k}_dir={v}" for k, v in data_dirs.items()),
    ]
    if not any(o.startswith("model=") for o in overrides):
        base.append("model=tiny")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[*base, *overrides])
    return to_run_config(cfg)


class FailingJudge:
    """A judge that breaks at scoring time: an evaluation that fails after training succeeded."""

    def __init__(self, message: str = "judge exploded"):
        self.message = message

    def score(self, images, prompts):
        raise RuntimeError(self.message)


class MeanJudge:
    """A judge that scores each image by its mean brightness in [0, 1]: per-sample numbers, cheaply."""

    def score(self, images, prompts):
        return {"brightness": images.float().mean(dim=(1, 2, 3)) / 255}


FAULTS_DIR = Path(__file__).resolve().parent / "faults"


def pytest_collection_modifyitems(config, items):
    """tests/faults/ is the fault suite (marker `faults`); its `faults_full` cases run only in the whole suite
    (`python tests/faults/run.py`, FAULTS_FULL=1), the rest in every run of the tests, CI included."""
    whole = os.environ.get("FAULTS_FULL") == "1"
    for item in items:
        if FAULTS_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.faults)
            if item.get_closest_marker("faults_full") and not whole:
                item.add_marker(pytest.mark.skip(reason="whole fault suite only: python tests/faults/run.py"))


def pytest_runtest_logreport(report):
    """A failed fault case goes into the suite's table as failed (FAULTS_RECORD: see tests/faults/faultlib.py)."""
    path = os.environ.get("FAULTS_RECORD")
    if path and report.failed and "faults/" in report.nodeid:
        with open(path, "a") as f:
            f.write(json.dumps({"failed": report.nodeid, "when": report.when}) + "\n")
