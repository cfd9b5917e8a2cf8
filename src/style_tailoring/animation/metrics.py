"""Animation metrics, beside the image ones: each a function of clips (B, F, 3, H, W) uint8.

- motion accuracy: the motion judge names the prompt's motion (clips whose prompt names one);
The judges are objects given from config (`_target_` nodes: the world's plug in there), never imported here.
- condition fidelity: how close the conditioning frame (the middle one, where the sticker is given) stays to the
  input sticker — PSNR in dB over pixels; frame fidelity: the same on every frame, each against the reference clip
  (the sticker moved exactly as the prompt's motion moves it — what the renderer draws — so the motion is undone
  and only what the model lost of the sticker counts; the middle frame's term is condition fidelity);
- background spread: how far the background's tint wanders over a clip, in grey levels (0-255): each frame's mean
  over its four corner patches, highest minus lowest frame;
- content consistency: the share of frames whose judged content (count, colour, shape) equals the clip's middle
  frame's; frame-to-frame similarity: mean cosine of consecutive frames' CLIP image embeddings;
- loop closure: the last → first frame difference over the mean consecutive difference (≈ 1 for a clean loop,
  ≫ 1 for a jump at the seam; a still clip, with no differences, scores 1; a bounce, whose seam is its largest
  step, about 1.5);
- style score per frame: the style judge's mean over every frame.
"""

from __future__ import annotations

import numpy as np
import torch


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per image PSNR (dB) of uint8 images (B, 3, H, W)."""
    mse = ((a.float() - b.float()) ** 2).flatten(1).mean(1).clamp_min(1e-3)
    return 10 * torch.log10(255.0**2 / mse)


def condition_fidelity(clips: torch.Tensor, stickers: torch.Tensor) -> torch.Tensor:
    """PSNR of each clip's middle frame against its input sticker."""
    return psnr(clips[:, clips.shape[1] // 2], stickers)


def frame_fidelity(clips: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Per clip: the mean over frames of each frame's PSNR against the reference clip's frame (B, F, 3, H, W)."""
    n, frames = clips.shape[:2]
    return psnr(clips.flatten(0, 1), references.flatten(0, 1)).reshape(n, frames).mean(1)


def background_spread(clips: torch.Tensor, corner: int = 3) -> torch.Tensor:
    """Per clip: max − min over frames of the frame's mean grey value in its four `corner`×`corner` corner patches.
    A sticker sits inside its frame on a flat background, so its corners are background in every frame."""
    c = corner
    x = clips.float().mean(2)  # grey: (B, F, H, W)
    corners = torch.stack([x[..., :c, :c], x[..., :c, -c:], x[..., -c:, :c], x[..., -c:, -c:]], dim=2)
    grey = corners.flatten(2).mean(-1)  # (B, F)
    return grey.max(1).values - grey.min(1).values


def loop_closure(clips: torch.Tensor) -> torch.Tensor:
    """Per clip: the seam's mean absolute difference (last frame → first) over the mean consecutive difference."""
    x = clips.float()
    steps = (x[:, 1:] - x[:, :-1]).abs().flatten(2).mean(-1).mean(-1)
    seam = (x[:, 0] - x[:, -1]).abs().flatten(1).mean(-1)
    return torch.where(steps > 1e-6, seam / steps.clamp_min(1e-6), torch.ones_like(seam))


def motion_accuracy(judge, clips: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """Per clip: 1 if the motion judge names the prompt's motion, NaN where the prompt names none. `judge`: an
    object with `motions(clips) -> [motion]` and `prompt_motion(prompt) -> motion | None` (the world's
    `style_tailoring.world.motion.MotionJudge`, from config)."""
    asked = [judge.prompt_motion(p) for p in prompts]
    return torch.tensor([float("nan") if m is None else float(p == m) for p, m in zip(judge.motions(clips), asked)],
                        dtype=torch.float64)


def content_consistency(judges, clips: torch.Tensor) -> torch.Tensor:
    """Per clip: the share of frames the attribute judge reads as the same content as the middle frame."""
    n, frames = clips.shape[:2]
    predicted = judges.predict_attributes(clips.flatten(0, 1))
    same = np.ones((n, frames), dtype=bool)
    for name in ("count", "colour", "subject"):
        values = np.array(predicted[name]).reshape(n, frames)
        same &= values == values[:, frames // 2: frames // 2 + 1]
    return torch.from_numpy(same.mean(1)).double()


@torch.no_grad()
def frame_similarity(clip_dir, clips: torch.Tensor) -> torch.Tensor:
    """Per clip: the mean cosine similarity of consecutive frames' CLIP image embeddings (a local CLIP dir)."""
    import torch.nn.functional as F
    from transformers import CLIPModel, CLIPProcessor

    from style_tailoring.models.safe_load import weights_kwargs

    model = CLIPModel.from_pretrained(clip_dir, **weights_kwargs(clip_dir, key="clip", switch=None))
    processor = CLIPProcessor.from_pretrained(clip_dir)
    n, frames = clips.shape[:2]
    pixels = processor.image_processor(list(clips.flatten(0, 1)), return_tensors="pt").pixel_values
    features = model.get_image_features(pixel_values=pixels)
    features = F.normalize(getattr(features, "pooler_output", features), dim=-1).reshape(n, frames, -1)
    return (features[:, 1:] * features[:, :-1]).sum(-1).mean(1).double()


def style_per_frame(judges, clips: torch.Tensor) -> torch.Tensor:
    """Per clip: the style judge's mean score over its frames."""
    n, frames = clips.shape[:2]
    return judges.style_score(clips.flatten(0, 1)).reshape(n, frames).mean(1).double()


def animation_scores(clips: torch.Tensor, stickers: torch.Tensor, prompts: list[str], *, motion_judge=None,
                     judges=None, clip_dir=None, references: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Every animation metric per clip, where its judge (or, for frame fidelity, its reference clip) is given:
    {name: (B,) tensor}. `judges`: image judges with `predict_attributes`, `style_score` and
    `alignment_per_sample` (the world's, from config)."""
    scores = {"condition_fidelity": condition_fidelity(clips, stickers).double(),
              "background_spread": background_spread(clips).double(),
              "loop_closure": loop_closure(clips).double()}
    if references is not None:
        scores["frame_fidelity"] = frame_fidelity(clips, references).double()
    if motion_judge is not None:
        scores["motion_accuracy"] = motion_accuracy(motion_judge, clips, prompts)
    if judges is not None:
        scores["content_consistency"] = content_consistency(judges, clips)
        scores["style_score"] = style_per_frame(judges, clips)
        middle = clips[:, clips.shape[1] // 2]
        scores["alignment"] = judges.alignment_per_sample(middle, [p.split(",")[0] for p in prompts])["alignment"]
    if clip_dir is not None:
        scores["frame_similarity"] = frame_similarity(clip_dir, clips)
    return scores
