"""A latent cache part truncated, bit-flipped or deleted after the cache was completed is found before it is read
(safetensors has no checksum: complete.json keeps each part's SHA-256), named in the log, and encoded again."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from conftest import make_cfg, write_folder
from faultlib import record
from style_tailoring.data.cache import build_cache
from style_tailoring.data.folder import ImageCaptionFolder
from style_tailoring.models.components import build_components


def damage_part(part, how: str) -> None:
    data = bytearray(part.read_bytes())
    if how == "bit flip":
        data[-7] ^= 0x04  # in the tensors' bytes: safetensors reads it as another number without a word
        part.write_bytes(bytes(data))
    elif how == "truncation":
        part.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "deletion":
        part.unlink()
    else:  # the manifest itself
        (part.parent / "complete.json").write_text('{"items": 4, "par')


@pytest.mark.parametrize("how", ["bit flip", "truncation", "deletion", "manifest truncation"])
def test_a_damaged_cache_part_is_named_and_encoded_again(how, tmp_path, caplog):
    comps = build_components(make_cfg({}, tmp_path / "x").model)
    root = write_folder(tmp_path / "style", 4, 0, sticker=True)
    first = build_cache(ImageCaptionFolder(root, resolution=32), comps, tmp_path / "cache", device="cpu",
                        with_text=True)
    directory = next((tmp_path / "cache").iterdir())
    part = directory / "part-0000-of-0001.safetensors"
    assert json.loads((directory / "complete.json").read_text())["sha256"][part.name]
    damage_part(part, how)
    with caplog.at_level(logging.WARNING, logger="style_tailoring.data.cache"):
        again = build_cache(ImageCaptionFolder(root, resolution=32), comps, tmp_path / "cache", device="cpu",
                            with_text=True)
    assert "encoding it again" in caplog.text and str(directory) in caplog.text
    assert (part.name in caplog.text) or how == "manifest truncation"
    for key, value in first.tensors.items():
        assert torch.equal(value, again.tensors[key]), key
    record("corrupt latent cache", f"a part: {how}" if how != "manifest truncation" else "its manifest truncated",
           "rebuilt")
