"""Image-caption folders: both caption conventions, and every bad sample reported with its path."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import write_folder
from style_tailoring.data.folder import BadSampleError, ImageCaptionFolder


def test_reads_metadata_jsonl_and_txt_captions(tmp_path):
    jsonl = ImageCaptionFolder(write_folder(tmp_path / "a", 5, 0, sticker=True), resolution=16)
    txt = ImageCaptionFolder(write_folder(tmp_path / "b", 3, 0, sticker=False, captions="txt"), resolution=16)
    assert len(jsonl) == 5 and len(txt) == 3
    item = jsonl[0]
    assert item["pixel_values"].shape == (3, 16, 16) and item["pixel_values"].dtype == torch.float32
    assert -1.0 <= item["pixel_values"].min() and item["pixel_values"].max() <= 1.0
    assert item["text"].endswith("sticker") and not txt[0]["text"].endswith("sticker")


def _break(root):
    (root / "0001.png").write_bytes(b"not a png at all")  # corrupt
    (root / "0002.png").unlink()  # listed but missing
    rows = [json.loads(l) for l in (root / "metadata.jsonl").read_text().splitlines()]
    rows[3]["text"] = ""  # caption missing
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_bad_samples_fail_with_their_paths(tmp_path):
    root = write_folder(tmp_path / "bad", 6, 0, sticker=True)
    _break(root)
    with pytest.raises(BadSampleError) as err:
        ImageCaptionFolder(root, resolution=16, name="style")
    message = str(err.value)
    assert "3 bad sample(s)" in message and "data.on_bad_sample=skip" in message
    for name, why in [("0001.png", "unreadable image"), ("0002.png", "image file missing"),
                      ("0003.png", "missing caption")]:
        assert f"{root / name}: {why}" in message


def test_skip_mode_drops_counts_and_lists_them(tmp_path, caplog):
    root = write_folder(tmp_path / "bad", 6, 0, sticker=True)
    _break(root)
    data = ImageCaptionFolder(root, resolution=16, on_bad_sample="skip", name="style")
    assert len(data) == 3 and len(data.bad_samples) == 3
    assert "skipping 3 bad sample(s)" in caplog.text and str(root / "0001.png") in caplog.text


def test_missing_txt_caption_and_missing_folder(tmp_path):
    root = write_folder(tmp_path / "t", 2, 0, sticker=True, captions="txt")
    (root / "0000.txt").unlink()
    with pytest.raises(BadSampleError, match=r"0000.png: missing caption"):
        ImageCaptionFolder(root, resolution=16)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ImageCaptionFolder(tmp_path / "nowhere", resolution=16)
