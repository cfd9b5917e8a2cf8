"""Hugging Face `datasets` as sources: parquet files in the Hub's layout and save_to_disk folders, written here with
`datasets` itself, train like the imagefolders they were made from (the same model, bit for bit), have their bad rows
named by file and row, key the latent cache by their content, resume exactly, and stream (datasets'
streaming=True) with the cache off."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import make_cfg
from style_tailoring.config import ConfigError
from style_tailoring.data.folder import BadSampleError
from style_tailoring.training.run import run

PARQUET = "data/train-00000-of-00001.parquet"


def rows_of(folder: Path) -> list[dict]:
    """The imagefolder's (image bytes, caption) rows in its metadata order."""
    meta = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    return [{"image": {"bytes": (folder / r["file_name"]).read_bytes(), "path": r["file_name"]}, "text": r["text"]}
            for r in meta]


def dataset(rows: list[dict]):
    import datasets

    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    return datasets.Dataset.from_list(rows, features=features)


def write_parquet(root: Path, rows: list[dict], files: int = 1) -> Path:
    """The Hub's layout: data/train-0000k-of-0000n.parquet."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    ds = dataset(rows)
    for k in range(files):
        ds.shard(files, k, contiguous=True).to_parquet(str(root / "data" / f"train-{k:05d}-of-{files:05d}.parquet"))
    return root


def write_saved(root: Path, rows: list[dict]) -> Path:
    dataset(rows).save_to_disk(str(root))
    return root


@pytest.fixture(scope="module")
def hf_dirs(data_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {"style": write_parquet(root / "style_parquet", rows_of(data_dirs["style"])),
            "alignment": write_saved(root / "alignment_saved", rows_of(data_dirs["alignment"]))}


def unet(run_dir: Path) -> dict:
    return load_file(run_dir / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_parquet_and_save_to_disk_sources_train_the_same_model_as_their_imagefolders(data_dirs, hf_dirs, tmp_path):
    common = ["strategy=style_tailoring", "strategy.t_split=500", f"data.cache.dir={tmp_path / 'cache'}"]
    folders = tmp_path / "folders"
    run(make_cfg(data_dirs, folders, *common))
    datasets_run = tmp_path / "datasets"
    metrics = run(make_cfg({**data_dirs, **hf_dirs}, datasets_run, *common))
    assert metrics["steps"] == 4 and same(unet(folders), unet(datasets_run))
    card = (datasets_run / "pipeline" / "README.md").read_text()
    assert "parquet (datasets) | 16 |" in card and "save_to_disk (datasets) | 24 |" in card
    caches = sorted(p.name.split("-")[0] for p in (tmp_path / "cache").iterdir())
    assert caches == ["alignment", "alignment", "style", "style"]  # their own cache entries, not the folders'


def test_a_bad_row_is_named_by_file_and_row_and_skip_trains_without_it(data_dirs, tmp_path):
    rows = rows_of(data_dirs["style"])
    rows[2]["image"] = {"bytes": b"\x89PNG\r\n\x1a\n not a png at all", "path": "broken.png"}
    rows[5]["text"] = "   "
    bad = write_parquet(tmp_path / "bad", rows)
    with pytest.raises(BadSampleError) as err:
        run(make_cfg({**data_dirs, "style": bad}, tmp_path / "run", "strategy=style_tailoring"))
    said = str(err.value)
    assert f"{bad / PARQUET} row 2: unreadable image" in said and f"{bad / PARQUET} row 5: missing caption" in said
    assert "2 bad sample(s)" in said and "data.on_bad_sample=skip" in said
    metrics = run(make_cfg({**data_dirs, "style": bad}, tmp_path / "skipped", "strategy=style_tailoring",
                           "data.on_bad_sample=skip"))
    assert metrics["steps"] == 4
    assert "parquet (datasets) | 14 |" in (tmp_path / "skipped" / "pipeline" / "README.md").read_text()


def test_captions_templates_transparency_and_the_cache_key_follow_the_rows(data_dirs, tmp_path):
    from style_tailoring.data.cache import cache_key
    from style_tailoring.data.hf import DatasetsSource
    from style_tailoring.models.components import build_tiny

    clear = Image.new("RGBA", (32, 32), (0, 0, 0, 0))  # transparent black: must train as the background
    buffer = io.BytesIO()
    clear.save(buffer, format="PNG")
    rows = [*rows_of(data_dirs["style"])[:3], {"image": {"bytes": buffer.getvalue(), "path": None}, "text": "none"}]
    root = write_parquet(tmp_path / "set", rows)
    source = DatasetsSource(root, 32, name="style", caption="{text}, sks style", background=(255, 0, 0))
    assert source.caption(0) == rows[0]["text"] + ", sks style"
    pixels = source[3]["pixel_values"]
    assert torch.allclose(pixels[:, 0, 0], torch.tensor([1.0, -1.0, -1.0]))  # red, not black
    comps = build_tiny(make_cfg(data_dirs, tmp_path / "x").model)
    key = cache_key(source, comps, with_text=True)
    assert cache_key(DatasetsSource(root, 32, name="style", caption="{text}, sks style", background=(255, 0, 0)),
                     comps, True) == key  # the same data: the same entry
    assert cache_key(DatasetsSource(root, 32, name="style", caption="{text}", background=(255, 0, 0)),
                     comps, True) != key  # another caption
    rows[1]["text"] = "a changed caption"
    write_parquet(root, rows)  # rewritten data
    assert cache_key(DatasetsSource(root, 32, name="style", caption="{text}, sks style", background=(255, 0, 0)),
                     comps, True) != key


@pytest.mark.parametrize("kind", ["random access, cached", "streaming, uncached"])
def test_a_datasets_run_resumed_from_its_checkpoint_equals_the_uninterrupted_one(kind, data_dirs, tmp_path):
    streaming = kind.startswith("streaming")
    style = write_parquet(tmp_path / "style", rows_of(data_dirs["style"]), files=3 if streaming else 1)
    alignment = write_saved(tmp_path / "alignment", rows_of(data_dirs["alignment"]))
    opts = ["strategy=style_tailoring", "strategy.t_split=500", "checkpoint.every_n_steps=2", "checkpoint.keep=-1",
            f"data.cache.dir={tmp_path / 'cache'}"]
    if streaming:
        opts += ["data.cache.enabled=false", "data.sources.style.streaming=true",
                 "data.sources.alignment.streaming=true"]
    dirs = {**data_dirs, "style": style, "alignment": alignment}
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    run(make_cfg(dirs, full, *opts))
    run(make_cfg(dirs, resumed, *opts, f"ckpt_path={full / 'checkpoints' / 'step-000002.ckpt'}"))
    assert same(unet(full), unet(resumed))
    if streaming:
        assert "parquet (datasets, streaming) | 16 |" in (full / "pipeline" / "README.md").read_text()


def test_streaming_is_refused_with_the_cache_on_and_for_an_imagefolder(data_dirs, hf_dirs, tmp_path):
    with pytest.raises(ConfigError, match="^data.cache.enabled: data.sources.style.dir is read as a stream"):
        run(make_cfg({**data_dirs, **hf_dirs}, tmp_path / "a", "data.sources.style.streaming=true"))
    with pytest.raises(ConfigError, match="^data.sources.style.streaming: .* is an imagefolder"):
        run(make_cfg(data_dirs, tmp_path / "b", "data.sources.style.streaming=true", "data.cache.enabled=false"))


def test_a_streamed_bad_row_is_named_when_it_is_met(data_dirs, tmp_path):
    rows = rows_of(data_dirs["style"])
    for row in rows:
        row["image"] = {"bytes": b"garbage", "path": None}
    bad = write_parquet(tmp_path / "bad", rows)
    with pytest.raises(BadSampleError, match=r"train-00000-of-00001\.parquet:row \d+: unreadable image"):
        run(make_cfg({**data_dirs, "style": bad}, tmp_path / "run", "strategy=style_tailoring",
                     "data.cache.enabled=false", "data.sources.style.streaming=true"))
