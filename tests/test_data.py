"""Image-caption folders: both caption conventions, and every bad sample reported with its path."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import png_claiming, write_folder
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
    rows = [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()]
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


def test_decompression_bomb_is_a_bad_sample_naming_path_and_limit(tmp_path):
    from PIL import Image

    root = write_folder(tmp_path / "bomb", 3, 0, sticker=True)
    png_claiming(root / "0001.png", 30000, 30000)  # 900 megapixels
    with pytest.raises(BadSampleError) as err:
        ImageCaptionFolder(root, resolution=16)
    assert f"{root / '0001.png'}: decompression bomb" in str(err.value)
    assert f"{Image.MAX_IMAGE_PIXELS} pixels" in str(err.value)
    png_claiming(root / "0002.png", 12000, 12000)  # 1-2x the limit: PIL only warns; refused all the same
    data = ImageCaptionFolder(root, resolution=16, on_bad_sample="skip")
    assert len(data) == 1 and {p for p, _ in data.bad_samples} == {str(root / "0001.png"), str(root / "0002.png")}


def _transparent_square(path, mode: str) -> None:
    """A red square on a fully transparent background, stored as `mode` (RGBA, LA or palette transparency); the
    transparent pixels hold black, as most editors store them."""
    from PIL import Image, ImageDraw

    image = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    ImageDraw.Draw(image).rectangle((10, 10, 21, 21), fill=(220, 30, 30, 255))
    if mode == "LA":
        image = image.convert("LA")
    elif mode == "P":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
        image.info["transparency"] = image.getpixel((0, 0))
    image.save(path, transparency=image.info.get("transparency")) if mode == "P" else image.save(path)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparent_images_are_composited_onto_the_background(tmp_path, mode):
    root = tmp_path / mode
    root.mkdir()
    _transparent_square(root / "0.png", mode)
    (root / "metadata.jsonl").write_text(json.dumps({"file_name": "0.png", "text": "a red square"}) + "\n")
    pixels = ImageCaptionFolder(root, resolution=32)[0]["pixel_values"]
    assert torch.allclose(pixels[:, 0, 0], torch.ones(3))  # white (1.0 in [-1, 1]), not black
    if mode == "RGBA":
        assert pixels[0, 16, 16] > 0.5 and pixels[1, 16, 16] < -0.5  # the red square survives
        green = ImageCaptionFolder(root, resolution=32, background=(0, 255, 0))[0]["pixel_values"]
        assert torch.allclose(green[:, 0, 0], torch.tensor([-1.0, 1.0, -1.0]))


def test_metadata_file_names_must_stay_inside_the_folder(tmp_path):
    import os

    root = write_folder(tmp_path / "d", 2, 0, sticker=True)
    write_folder(tmp_path / "outside", 1, 0, sticker=True)
    os.symlink(root / "0000.png", root / "link.png")  # a symlink inside the folder is the user's own business
    rows = [{"file_name": "0000.png", "text": "fine"}, {"file_name": "../outside/0000.png", "text": "escape"},
            {"file_name": str(tmp_path / "outside" / "0000.png"), "text": "absolute"},
            {"file_name": "./link.png", "text": "symlink"}]
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(BadSampleError) as err:
        ImageCaptionFolder(root, resolution=16)
    message = str(err.value)
    assert "2 bad sample(s)" in message
    assert f"{root / 'metadata.jsonl'}:2: file_name '../outside/0000.png' is absolute or leaves the data folder" \
        in message
    assert f"{root / 'metadata.jsonl'}:3: file_name" in message
    assert len(ImageCaptionFolder(root, resolution=16, on_bad_sample="skip")) == 2


def test_caption_templates_and_fixed_prompts(tmp_path):
    root = write_folder(tmp_path / "t", 3, 0, sticker=True)
    templated = ImageCaptionFolder(root, resolution=16, caption="{text}, sks style")
    assert templated[0]["text"] == ImageCaptionFolder(root, resolution=16)[0]["text"] + ", sks style"
    (root / "metadata.jsonl").write_text("".join(json.dumps({"file_name": f"{i:04d}.png"}) + "\n" for i in range(3)))
    with pytest.raises(BadSampleError, match="missing caption"):  # the file's caption is needed by a template
        ImageCaptionFolder(root, resolution=16, caption="{text}, sks style")
    fixed = ImageCaptionFolder(root, resolution=16, caption="sks style")  # DreamBooth-style: no captions needed
    assert [fixed[i]["text"] for i in range(3)] == ["sks style"] * 3
