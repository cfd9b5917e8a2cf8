"""The world's judge networks: one small CNN, one way to save and load a folder of them (judges.json, format 2).

Every shipped judge folder (assets/sticker_world/judges, judges_hatched, judges_motion) holds `judges.json` and one
safetensors file per network:

    {"format": 2, "networks": {NAME: {"file": "NAME.safetensors", "kind": "image" | "clip", "width": 32,
                                      "heads": {HEAD: classes}, "frames": 8 (a clip network's)}},
     ... what the folder's judges need besides (seed, look, motions)}

An `image` network reads uint8 images (N, 3, H, W); a `clip` network reads a clip's frames stacked as channels
(N, frames · 3, H, W) and looks at the frame-to-frame differences too. `load_networks` builds every network of a
folder; the judges (judges.py, styleforge.py, motion.py) pick theirs by name.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

FORMAT = 2
WIDTH = 32  # CNN judges' base channel count


class JudgeNet(nn.Module):
    def __init__(self, heads: dict[str, int], width: int = WIDTH, in_channels: int = 3):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1), nn.GELU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.GroupNorm(8, 2 * w), nn.GELU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.GELU(),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.GroupNorm(8, 4 * w), nn.GELU(),
            nn.Conv2d(4 * w, 4 * w, 3, stride=2, padding=1), nn.GELU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.heads = nn.ModuleDict({name: nn.Linear(4 * w, n) for name, n in heads.items()})

    def forward(self, images_uint8: torch.Tensor) -> dict[str, torch.Tensor]:
        x = images_uint8.float() / 127.5 - 1
        if x.shape[-1] != 32:
            x = F.interpolate(x, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
        features = self.body(x)
        return {name: head(features) for name, head in self.heads.items()}


class ClipJudgeNet(nn.Module):
    """The judges' CNN over a clip's frames and its frame-to-frame differences (the seam's included: the loop's),
    stacked as channels: the motion is in the differences, which a small net finds hard to form itself."""

    def __init__(self, heads: dict[str, int], width: int, frames: int):
        super().__init__()
        self.frames = frames
        self.net = JudgeNet(heads, width, in_channels=6 * frames)

    def forward(self, stacked_uint8: torch.Tensor) -> dict[str, torch.Tensor]:
        x = stacked_uint8.float().unflatten(1, (self.frames, 3))
        differences = (x.roll(-1, dims=1) - x) * 2 + 127.5  # amplified, centred where JudgeNet's scaling puts 0
        return self.net(torch.cat([x, differences], dim=1).flatten(1, 2))


def describe(net: nn.Module) -> dict:
    """What judges.json records of a network, to build it again."""
    if isinstance(net, ClipJudgeNet):
        inner = net.net
        return {"kind": "clip", "frames": net.frames, "width": inner.heads[next(iter(inner.heads))].in_features // 4,
                "heads": {name: head.out_features for name, head in inner.heads.items()}}
    return {"kind": "image", "width": net.heads[next(iter(net.heads))].in_features // 4,
            "heads": {name: head.out_features for name, head in net.heads.items()}}


def save_networks(directory, networks: dict[str, nn.Module], **extra) -> None:
    """Each network's weights (NAME.safetensors) and judges.json describing them, with `extra` beside."""
    from safetensors.torch import save_file

    from style_tailoring.io import write_json

    directory = Path(directory)
    entries = {}
    for name, net in networks.items():
        save_file(net.state_dict(), directory / f"{name}.safetensors")
        entries[name] = {"file": f"{name}.safetensors", **describe(net)}
    write_json(directory / "judges.json", {"format": FORMAT, "networks": entries, **extra})


def read_config(directory) -> dict:
    """A judge folder's judges.json, checked to be format 2."""
    path = Path(directory) / "judges.json"
    config = json.loads(path.read_text())
    if config.get("format") != FORMAT:
        raise ValueError(f"{path}: judges.json format {config.get('format', 1)}, this version reads format {FORMAT} "
                         "(rebuild with python -m style_tailoring.world only=judges|styleforge|motion force=true)")
    return config


def load_networks(directory) -> dict[str, nn.Module]:
    """Every network of a judge folder, built from judges.json and loaded from its safetensors (eval mode)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    networks = {}
    for name, entry in read_config(directory)["networks"].items():
        if entry["kind"] == "clip":
            net = ClipJudgeNet(entry["heads"], entry["width"], entry["frames"])
        else:
            net = JudgeNet(entry["heads"], entry["width"])
        net.load_state_dict(load_file(directory / entry["file"]))
        networks[name] = net.eval()
    return networks
