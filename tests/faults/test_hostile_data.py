"""Hostile and odd training data: each kind of image, caption and file name is either a bad sample named by its
path (and metadata line), found when the folder is scanned, before any training work (`on_bad_sample=error` stops,
`skip` drops and counts it), or loads with a defined handling; the good samples beside it always load."""

from __future__ import annotations

import io
import json
import os
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import make_cfg, png_claiming, write_folder
from faultlib import record
from style_tailoring.data.folder import BadSampleError, ImageCaptionFolder
from style_tailoring.data.images import to_rgb

GOOD = 3  # good samples beside every hostile one
RED, BLUE, WHITE = (220, 30, 30), (30, 30, 220), (255, 255, 255)
# Hypothesis: a few dozen examples in every run of the tests, many more in the whole fault suite.
EXAMPLES = settings(max_examples=400 if os.environ.get("FAULTS_FULL") == "1" else 25, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _folder(root: Path) -> Path:
    """GOOD good samples (0000.png ...) with a metadata.jsonl that rows can be appended to."""
    return write_folder(root, GOOD, 0, sticker=True)


def _add(root: Path, name: str, data: bytes, text="a hostile sample") -> Path:
    (root / name).write_bytes(data)
    with open(root / "metadata.jsonl", "a") as f:
        f.write(json.dumps({"file_name": name, "text": text}) + "\n")
    return root / name


def _encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _noise(size=(48, 48)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size[::-1], 3), dtype=np.uint8))


def _assert_rejected(root: Path, where: str, why: str) -> None:
    """Error mode names `where: why`; skip mode drops just that sample, and every good one still loads."""
    with pytest.raises(BadSampleError) as err:
        ImageCaptionFolder(root, resolution=16, name="style")
    assert f"{where}: {why}" in str(err.value) and "1 bad sample(s)" in str(err.value)
    data = ImageCaptionFolder(root, resolution=16, on_bad_sample="skip", name="style")
    assert [p for p, _ in data.bad_samples] == [where] and len(data) == GOOD
    assert all(data[i]["pixel_values"].shape == (3, 16, 16) for i in range(len(data)))


# --- images that cannot be used: bad samples, found by the scan --------------------------------------------------

def _truncated(fmt: str) -> bytes:
    whole = _encoded(_noise(), fmt)
    return whole[: len(whole) * 9 // 10]


UNUSABLE = {
    "zero-byte file": ("0.png", lambda: b"", "unreadable image"),
    "truncated PNG": ("t.png", lambda: _truncated("PNG"), "unreadable image"),
    # Opens fine (the header is whole): only decoding finds the missing tail, so the scan decodes JPEGs.
    "truncated JPEG": ("t.jpg", lambda: _truncated("JPEG"), "unreadable image (image file is truncated"),
    "truncated WebP": ("t.webp", lambda: _truncated("WEBP"), "unreadable image"),
    "truncated BMP": ("t.bmp", lambda: _truncated("BMP"), "unreadable image (image file is truncated"),
    "text named .png": ("notes.png", lambda: b"these are my notes, not pixels\n", "unreadable image"),
}


@pytest.mark.parametrize("case", list(UNUSABLE))
def test_an_unusable_image_is_a_bad_sample_named_by_its_path(tmp_path, case):
    name, data, why = UNUSABLE[case]
    root = _folder(tmp_path / "d")
    _assert_rejected(root, str(_add(root, name, data())), why)
    record("hostile image", case, "rejected with message")


@pytest.mark.parametrize("side", [30000, 12000])  # far over PIL's limit; 1-2x over it (PIL only warns there)
def test_a_decompression_bomb_is_refused_naming_the_limit(tmp_path, side):
    root = _folder(tmp_path / "d")
    bomb = _add(root, "bomb.png", b"")
    png_claiming(bomb, side, side)
    _assert_rejected(root, str(bomb), f"decompression bomb: Image size ({side * side} pixels) exceeds limit")
    with pytest.raises(BadSampleError, match=f"PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS} pixels"):
        ImageCaptionFolder(root, resolution=16)
    record("hostile image", f"decompression bomb ({side}x{side})", "refused")


# --- odd images that load: each with its defined handling ---------------------------------------------------------

def _load_one(tmp_path, name: str, data: bytes, resolution: int = 16, background=WHITE) -> torch.Tensor:
    """The pixels (in [0, 255]) the odd image trains with; the good samples beside it load too."""
    root = _folder(tmp_path / "d")
    _add(root, name, data)
    folder = ImageCaptionFolder(root, resolution=resolution, background=background)
    assert len(folder) == GOOD + 1 and all(folder[i]["text"] for i in range(GOOD))
    return (folder[GOOD]["pixel_values"] + 1) * 127.5


def _close(pixel: torch.Tensor, colour) -> bool:
    return bool((pixel - torch.tensor(colour, dtype=torch.float32)).abs().max() < 12)


def test_16_bit_greyscale_keeps_its_range_instead_of_clipping_to_white(tmp_path):
    ramp = np.repeat(np.linspace(0, 65535, 16).astype(np.uint16)[None, :], 16, axis=0)  # black → white, left → right
    pixels = _load_one(tmp_path, "ramp16.png", _encoded(Image.fromarray(ramp), "PNG"))
    assert Image.open(io.BytesIO(_encoded(Image.fromarray(ramp), "PNG"))).mode in ("I;16", "I")
    row = pixels[0, 8]
    assert row[0] < 10 and row[-1] > 245 and abs(float(row[8]) - 136) < 10  # PIL's own convert: 255 from x=1 on
    assert bool((row[1:] >= row[:-1]).all())
    # Mode I (32-bit, how older PIL opens 16-bit PNGs) holds the same 16-bit values.
    as_i = np.asarray(to_rgb(Image.fromarray(ramp.astype(np.int32)), WHITE))
    assert as_i[0, 0, 0] == 0 and as_i[0, -1, 0] == 255 and as_i[0, 8, 0] == 136
    # A 16-bit tRNS grey value is transparency: composited onto the background as for 8-bit images.
    keyed = Image.fromarray(ramp)
    composited = np.asarray(to_rgb(Image.open(io.BytesIO(_encoded(keyed, "PNG", transparency=0))), (0, 255, 0)))
    assert tuple(composited[0, 0]) == (0, 255, 0) and tuple(composited[0, -1]) == (255, 255, 255)
    record("odd image", "16-bit greyscale PNG (I;16, I, with tRNS)", "survived", cases=3)


def _red_left_blue_right(size=(32, 32)) -> Image.Image:
    image = Image.new("RGB", size, BLUE)
    image.paste(RED, (0, 0, size[0] // 2, size[1]))
    return image


ODD_IMAGES = {
    # (file name, bytes, background, (top-left, top-right) colour of the 16 px training image)
    "CMYK JPEG": ("cmyk.jpg", lambda: _encoded(_red_left_blue_right().convert("CMYK"), "JPEG", quality=95),
                  WHITE, (RED, BLUE)),
    "palette PNG": ("p.png", lambda: _encoded(_red_left_blue_right().convert("P", palette=Image.Palette.ADAPTIVE),
                                              "PNG"), WHITE, (RED, BLUE)),
    "palette PNG with transparency": (
        "pt.png", lambda: _encoded(_red_left_blue_right().convert("P", palette=Image.Palette.ADAPTIVE), "PNG",
                                   transparency=1), (0, 255, 0), None),
    "greyscale (L)": ("l.png", lambda: _encoded(Image.new("L", (32, 32), 90), "PNG"), WHITE, ((90,) * 3,) * 2),
    "greyscale + alpha (LA)": ("la.png", lambda: _encoded(Image.new("LA", (32, 32), (90, 0)), "PNG"), RED,
                               (RED, RED)),
    # The content decides the format, not the name.
    "PNG bytes named .jpg": ("png.jpg", lambda: _encoded(_red_left_blue_right(), "PNG"), WHITE, (RED, BLUE)),
    # Resized so the short side is the resolution, then center-cropped: the middle of a wide image trains.
    "non-square (wide)": ("wide.png", lambda: _encoded(_wide(), "PNG"), WHITE, (RED, RED)),
}


def _wide() -> Image.Image:
    image = Image.new("RGB", (96, 32), BLUE)
    image.paste(RED, (32, 0, 64, 32))  # the middle third: exactly what a center crop keeps
    return image


@pytest.mark.parametrize("case", list(ODD_IMAGES))
def test_an_odd_image_loads_with_its_defined_handling(tmp_path, case):
    name, data, background, corners = ODD_IMAGES[case]
    pixels = _load_one(tmp_path, name, data(), background=background)
    if corners is None:  # palette index 1 is transparent: whichever half has it shows the background
        left, right = pixels[:, 1, 1], pixels[:, 1, 14]
        assert (_close(left, background) and _close(right, BLUE)) or (_close(left, RED) and _close(right, background))
    else:
        assert _close(pixels[:, 1, 1], corners[0]) and _close(pixels[:, 1, 14], corners[1])
    record("odd image", case, "survived")


@pytest.mark.parametrize("orientation", [6, 8])
def test_an_exif_rotated_jpeg_loads_upright(tmp_path, orientation):
    """A camera stores a portrait photo sideways with an EXIF orientation; viewers (and diffusers' scripts, through
    ImageOps.exif_transpose) show it upright: red on top here, blue below."""
    upright = Image.new("RGB", (32, 64), BLUE)
    upright.paste(RED, (0, 0, 32, 32))
    # What the camera stores: the upright picture turned against the rotation the tag asks of viewers.
    stored = upright.transpose(Image.Transpose.ROTATE_90 if orientation == 6 else Image.Transpose.ROTATE_270)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _encoded(stored, "JPEG", exif=exif, quality=95)
    root = _folder(tmp_path / "d")
    path = _add(root, "portrait.jpg", data)
    folder = ImageCaptionFolder(root, resolution=32, center_crop=True)
    pixels = (folder[GOOD]["pixel_values"] + 1) * 127.5  # the 32 px center of the upright 32 x 64: red | blue
    assert _close(pixels[:, 2, 16], RED) and _close(pixels[:, 29, 16], BLUE)
    from style_tailoring.data.images import load_clip

    frames = load_clip(path, WHITE, 2)  # the clip path of animation models likewise
    assert frames[0].size == (32, 64) and _close(torch.tensor(frames[0].getpixel((16, 4))), RED)
    record("odd image", f"EXIF orientation {orientation} JPEG", "survived")


# --- captions -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, why", [
    ("", "missing caption"), (" \t\n\u3000", "missing caption"), (None, "missing caption"),
    (42, "caption is not a string (int)"), (["a", "list"], "caption is not a string (list)"),
    ("a cat \udcff", "caption is not valid Unicode"),  # a lone surrogate: the tokenizer cannot encode it
])
def test_a_caption_that_cannot_train_is_a_bad_sample(tmp_path, text, why):
    root = _folder(tmp_path / "d")
    _assert_rejected(root, str(_add(root, "x.png", _encoded(_noise(), "PNG"), text=text)), why)
    record("hostile caption", f"metadata text {text!r}"[:40], "rejected with message")


def test_blank_txt_captions_and_non_utf8_bytes_are_bad_samples_naming_the_file(tmp_path):
    root = write_folder(tmp_path / "t", GOOD, 0, sticker=True, captions="txt")
    (root / "blank.png").write_bytes(_encoded(_noise(), "PNG"))
    (root / "blank.txt").write_text("  \n\t ")
    (root / "latin1.png").write_bytes(_encoded(_noise(), "PNG"))
    (root / "latin1.txt").write_bytes("a caf\xe9 sticker".encode("latin-1"))  # é as one byte: not UTF-8
    with pytest.raises(BadSampleError) as err:
        ImageCaptionFolder(root, resolution=16)
    assert f"{root / 'blank.png'}: missing caption" in str(err.value)
    assert f"{root / 'latin1.txt'}: caption not UTF-8 text (byte 0xe9 at offset 5)" in str(err.value)
    data = ImageCaptionFolder(root, resolution=16, on_bad_sample="skip")
    assert len(data) == GOOD and len(data.bad_samples) == 2
    # A fixed prompt needs no caption files: unreadable ones do not matter then.
    assert len(ImageCaptionFolder(root, resolution=16, caption="sks style")) == GOOD + 2
    record("hostile caption", ".txt blank or not UTF-8", "rejected with message", cases=2)


def test_non_utf8_metadata_line_names_file_and_line_and_loses_no_other_line(tmp_path):
    root = _folder(tmp_path / "d")
    (root / "x.png").write_bytes(_encoded(_noise(), "PNG"))
    with open(root / "metadata.jsonl", "ab") as f:
        f.write(b'{"file_name": "x.png", "text": "a caf\xe9"}\n')
    _assert_rejected(root, f"{root / 'metadata.jsonl'}:{GOOD + 1}", "not UTF-8 text (byte 0xe9 at offset 37)")
    record("hostile caption", "metadata.jsonl line not UTF-8", "rejected with message")


def test_byte_order_marks_and_crlf_line_ends_are_read_as_text(tmp_path):
    """What Windows editors write: a UTF-8 BOM at the start of the file, \\r\\n line ends."""
    root = _folder(tmp_path / "d")
    rows = (root / "metadata.jsonl").read_text().splitlines()
    (root / "metadata.jsonl").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode() + b"\r\n")
    data = ImageCaptionFolder(root, resolution=16)
    assert [data.caption(i) for i in range(GOOD)] == [json.loads(r)["text"] for r in rows]
    txt = write_folder(tmp_path / "t", 1, 0, sticker=True, captions="txt")
    (txt / "0000.txt").write_bytes(b"\xef\xbb\xbfa red sticker\r\n")
    assert ImageCaptionFolder(txt, resolution=16).caption(0) == "a red sticker"
    record("odd caption", "UTF-8 BOM, CRLF line ends", "survived", cases=2)


def test_any_caption_text_trains_as_written(tmp_path):
    """Captions are arbitrary Unicode (written unescaped, as json.dumps(ensure_ascii=False) does): each trains as
    written, stripped; line and paragraph separators (U+2028, U+0085) inside one do not split its JSON line."""
    root = _folder(tmp_path / "d")
    (root / "x.png").write_bytes(_encoded(_noise(), "PNG"))
    base = (root / "metadata.jsonl").read_text()
    tried = []

    @EXAMPLES
    @given(st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=60)
           .filter(lambda s: s.strip()) | st.sampled_from(["a\u2028b", "x\x85y", "tab\tand\u00a0nbsp", "猫 🐱"]))
    def check(text):
        row = json.dumps({"file_name": "x.png", "text": text}, ensure_ascii=False)
        (root / "metadata.jsonl").write_text(base + row + "\n", encoding="utf-8")
        data = ImageCaptionFolder(root, resolution=16)
        assert len(data) == GOOD + 1 and data.caption(GOOD) == text.strip()
        tried.append(text)

    check()
    record("odd caption", "arbitrary Unicode text (hypothesis)", "survived", cases=len(tried))


def test_metadata_lines_that_are_not_rows_are_bad_samples_and_lose_nothing_else(tmp_path):
    """Any line that is not a JSON object with a string file_name (invalid JSON, arrays, numbers, null, objects
    without file_name or with another type there, stray bytes) is a bad sample named by file and line; the good rows
    around it all load."""
    root = _folder(tmp_path / "d")
    good_rows = (root / "metadata.jsonl").read_bytes().splitlines()
    json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                               lambda inner: st.lists(inner, max_size=3)
                               | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)
    not_a_row = (json_values.filter(lambda v: not isinstance(v, dict) or "file_name" not in v).map(json.dumps)
                 .map(str.encode)
                 | st.builds(lambda v: json.dumps({"file_name": v, "text": "t"}).encode(),
                             st.integers() | st.none() | st.lists(st.text(), max_size=2))
                 | st.binary(min_size=1, max_size=30).filter(lambda b: b"\n" not in b))
    tried = []

    def blank(line: bytes) -> bool:  # blank lines are no rows at all: skipped
        try:
            return not line.decode("utf-8-sig").strip()
        except UnicodeDecodeError:
            return False

    @EXAMPLES
    @given(st.lists(not_a_row, min_size=1, max_size=4), st.randoms(use_true_random=False))
    def check(hostile, rng):
        lines = good_rows + hostile
        rng.shuffle(lines)
        (root / "metadata.jsonl").write_bytes(b"\n".join(lines) + b"\n")
        bad_lines = [n for n, line in enumerate(lines, 1) if line in hostile and not blank(line)]
        data = ImageCaptionFolder(root, resolution=16, on_bad_sample="skip")
        assert sorted(s.path.name for s in data.samples) == [f"{i:04d}.png" for i in range(GOOD)]
        assert [p for p, _ in data.bad_samples] == [f"{root / 'metadata.jsonl'}:{n}" for n in bad_lines]
        if bad_lines:
            with pytest.raises(BadSampleError, match=f"metadata.jsonl:{bad_lines[0]}: "):
                ImageCaptionFolder(root, resolution=16)
        tried.append(len(bad_lines))

    check()
    record("hostile metadata", "lines that are not rows (hypothesis)", "rejected with message", cases=sum(tried))


# --- file names -----------------------------------------------------------------------------------------------------

def test_a_file_listed_twice_is_a_bad_sample_naming_both_lines(tmp_path):
    """A second row for the same file would silently double its weight (and give it two captions): an error naming
    both lines; skip keeps the first row."""
    root = _folder(tmp_path / "d")
    with open(root / "metadata.jsonl", "a") as f:
        f.write(json.dumps({"file_name": "0001.png", "text": "the same file again"}) + "\n")
        f.write(json.dumps({"file_name": "./sub/../0002.png", "text": "and again, spelt otherwise"}) + "\n")
    with pytest.raises(BadSampleError) as err:
        ImageCaptionFolder(root, resolution=16)
    metadata = root / "metadata.jsonl"
    assert f"{metadata}:{GOOD + 1}: file_name '0001.png' names the file of line 2 again" in str(err.value)
    assert f"{metadata}:{GOOD + 2}: file_name './sub/../0002.png' names the file of line 3 again" in str(err.value)
    data = ImageCaptionFolder(root, resolution=16, on_bad_sample="skip")
    assert len(data) == GOOD and data.caption(1) != "the same file again"
    record("hostile file name", "file listed twice in metadata.jsonl", "rejected with message", cases=2)


def _unicode_folder(root: Path) -> list[str]:
    """Images under Japanese, accented (NFC and NFD), spaced and non-UTF-8 names; returns the names on disk."""
    root.mkdir(parents=True)
    cafe = "caf\u00e9"  # NFC: é is one code point
    names = ["猫の絵.png", f"{cafe} noir.png", unicodedata.normalize("NFD", f"{cafe} au lait.png"),
             "  leading and trailing spaces  .png", os.fsdecode(b"latin1-\xe9.png")]  # the last: bytes, not UTF-8
    for i, name in enumerate(names):
        _red_left_blue_right((32 + i, 32)).save(root / name, format="PNG")
    return names


def test_unicode_file_names_load_and_cache(tmp_path):
    """Every name a file system holds loads, from .txt captions and from metadata.jsonl; metadata written in NFC
    finds a file whose name is NFD (copied from macOS) and the reverse; and the latent cache keys them all."""
    from style_tailoring.data.cache import build_cache
    from style_tailoring.models.components import build_tiny

    txt = tmp_path / "txt"
    names = _unicode_folder(txt)
    for i, name in enumerate(names):
        (txt / name).with_suffix(".txt").write_text(f"sticker {i}")
    folder = ImageCaptionFolder(txt, resolution=32, name="txt")
    assert sorted(s.path.name for s in folder.samples) == sorted(names)
    meta = tmp_path / "meta"
    names = _unicode_folder(meta)
    # Row 1 names an NFC file in NFD, row 2 an NFD file in NFC; row 4's surrogate is JSON-escaped (it is no UTF-8).
    listed = [names[0], unicodedata.normalize("NFD", names[1]), unicodedata.normalize("NFC", names[2]), *names[3:]]
    assert listed[1] != names[1] and listed[2] != names[2]
    (meta / "metadata.jsonl").write_text("".join(json.dumps({"file_name": n, "text": f"s{i}"}, ensure_ascii=i == 4)
                                                 + "\n" for i, n in enumerate(listed)), encoding="utf-8")
    folder = ImageCaptionFolder(meta, resolution=32, name="meta")
    assert [s.path.name for s in folder.samples] == names
    comps = build_tiny(make_cfg({}, tmp_path / "run").model, seed=0)
    first = build_cache(folder, comps, tmp_path / "cache", device="cpu", with_text=True, batch_size=2)
    again = build_cache(folder, comps, tmp_path / "cache", device="cpu", with_text=True, batch_size=2)
    assert len(list((tmp_path / "cache").iterdir())) == 1  # one key, found again
    assert all(torch.equal(first[i]["latent_mean"], again[i]["latent_mean"]) for i in range(len(names)))
    assert [first[i]["text"] for i in range(len(names))] == [f"s{i}" for i in range(len(names))]
    record("odd file name", "Japanese, accents, NFC vs NFD, spaces, non-UTF-8 bytes", "survived", cases=len(names) + 2)


def test_a_file_name_that_is_no_file_in_the_folder_is_a_bad_sample(tmp_path):
    """Whatever string a row gives as file_name (absolute, climbing out with .., empty, a NUL, a lone surrogate),
    the folder reads only files inside it: anything else is a bad sample named by its line or path."""
    outside = write_folder(tmp_path / "outside", 1, 0, sticker=True)
    root = _folder(tmp_path / "d")
    (root / "unlisted.png").write_bytes(_encoded(_noise(), "PNG"))
    good = (root / "metadata.jsonl").read_text()
    segments = st.sampled_from(["..", ".", "", "0000.png", "unlisted.png", "nope.png", "sub", "d", str(outside), "/",
                                "\x00", "\udcff", "~", "outside", "0000.png/.."])
    loaded, rejected = [], []

    @EXAMPLES
    @given(st.lists(segments, min_size=1, max_size=5).map("/".join))
    @example("./unlisted.png")
    @example("../d/unlisted.png")
    def check(file_name):
        (root / "metadata.jsonl").write_text(good + json.dumps({"file_name": file_name, "text": "t"}) + "\n")
        data = ImageCaptionFolder(root, resolution=16, on_bad_sample="skip")
        for sample in data.samples:
            assert os.path.normpath(sample.path).startswith(str(root) + os.sep)
        assert len(data) + len(data.bad_samples) == GOOD + 1  # the row is one or the other (a duplicate included)
        (loaded if len(data) > GOOD else rejected).append(file_name)

    check()
    record("hostile file name", "file_name leaving the folder, empty, NUL (hypothesis)", "rejected with message",
           cases=len(rejected))
    assert loaded  # the explicit examples at least
    record("odd file name", "file_name reaching a file of the folder by ./, ../d/ (hypothesis)", "survived",
           cases=len(loaded))


# --- captions longer than the text encoder's window ---------------------------------------------------------------

def test_captions_longer_than_the_tokenizer_window_train_truncated_and_are_counted(tmp_path, caplog):
    """Defined handling: such a caption trains cut at the tokenizer's model_max_length (as diffusers' scripts do);
    one warning per source names it, its count and an example, and metrics.json records the count per source."""
    from style_tailoring.training.run import run

    dirs = {"alignment": write_folder(tmp_path / "alignment", 4, 1, sticker=False),
            "style": write_folder(tmp_path / "style", 4, 2, sticker=True)}
    rows = [json.loads(line) for line in (dirs["style"] / "metadata.jsonl").read_text().splitlines()]
    long_caption = "a sticker " * 40  # 80 word tokens + start and end: over the tiny tokenizer's 77
    rows[1]["text"] = rows[3]["text"] = long_caption
    rows[2]["text"] = "a sticker " * 37 + "a"  # 75 + 2 = 77 tokens: exactly the window, nothing cut
    (dirs["style"] / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_dir = tmp_path / "run"
    run(make_cfg(dirs, run_dir, "trainer.max_steps=1", "data.batch_size=2", "trainer.enable_progress_bar=false"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["data/style/captions_truncated"] == 2 and metrics["data/alignment/captions_truncated"] == 0
    warnings = [r.getMessage() for r in caplog.records if "train truncated" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].startswith("data set 'style': 2 of 4 captions are longer than the text encoder's 77 tokens")
    assert long_caption.strip()[:100] in warnings[0]
    record("hostile caption", "longer than the tokenizer window", "reported")
