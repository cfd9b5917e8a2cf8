"""The raters a HITL round can use, each one class here and one yaml in conf/hitl/rater/ (`hitl/rater=NAME`).

A rater rates a round's candidates: `rate(cfg, round_dir, candidates, images, prompts)` returns the merged rating of
each candidate ({file_name: Rating}), every rater's rows (for ratings.csv) and an agreement summary. `check(cfg)`
refuses, before any work, what it cannot rate with (naming the key); `needs_images` says whether it looks at the
images, `audited` whether the evaluation's judges rate the same candidates beside it (every rater but the
evaluation's judges themselves: does curation only please its own judge?). The machine raters read the data set's
judges (eval.judges) unless `judges` names others (`hitl.rater.judges`, a `_target_` node like eval.judges; the
Sticker World ships assets/sticker_world/judges_rater for this): then no rater uses the judges that audit and
evaluate. The per-image algorithms are curation/raters.py's; adding a rater is a class here (or anywhere: the yaml
names it as `_target_`) and its yaml.
"""

from __future__ import annotations

from pathlib import Path

from style_tailoring.config import ConfigError
from style_tailoring.curation.raters import JudgeRater, NoisyRater, Rating, agreement, merge_one
from style_tailoring.evaluation.judges import build_judges

STYLE_MERGES = ("mean", "median")


class JudgesRater:
    """Judges as the rater: aligned = every prompted attribute right, style = the style score as a 1-5 grade. The
    data set's judges (eval.judges), or `judges` (a `_target_` node): judges of the rater's own, audited by the
    evaluation's."""

    name = "judges"
    needs_images = True

    def __init__(self, judges=None):
        self.judges, self._built = judges, None

    @property
    def audited(self) -> bool:
        return self.judges is not None

    def judges_key(self) -> str:
        return "hitl.rater.judges" if self.judges is not None else "eval.judges"

    def check(self, cfg) -> None:
        from hydra.errors import InstantiationException

        from style_tailoring.evaluation.metrics import MetricUnavailable
        from style_tailoring.evaluation.validate import check_target

        if self.judges is None and cfg.eval.judges is None:
            raise ConfigError("eval.judges", f"hitl.rater {self.name} rates with the data set's judges, and this data "
                              "set has none (set eval.judges or hitl.rater.judges, or rate with people: "
                              "hitl/rater=people)")
        check_target(self.judges_key(), self.judges if self.judges is not None else cfg.eval.judges)
        if self.judges is not None:
            try:  # loaded now, so a missing rater judge stops the loop before any candidate is generated
                self.rater_judges(cfg)
            except (MetricUnavailable, OSError, InstantiationException) as err:
                cause = err.__cause__ or err  # Hydra wraps the loader's own message
                raise ConfigError("hitl.rater.judges", f"cannot load the rater's judges: {cause}") from None

    def rater_judges(self, cfg):
        """The judges this rater reads (built once)."""
        if self._built is None:
            self._built = build_judges(self.judges if self.judges is not None else cfg.eval.judges)
        return self._built

    def ratings(self, cfg, images, prompts: list[str], training_prompts: list[str]) -> dict[str, list[Rating]]:
        """{rater: ratings} of the images (one rater here; several simulated people for NoisyRaters)."""
        return {self.name: JudgeRater(self.rater_judges(cfg)).rate(images, prompts)}

    def rate(self, cfg, round_dir: Path, candidates: list[dict], images, training_prompts: list[str]):
        per_rater = self.ratings(cfg, images, [c["prompt"] for c in candidates], training_prompts)
        merged = [merge_one(list(rs), getattr(self, "style_merge", "mean")) for rs in zip(*per_rater.values())]
        rows = [{"file_name": c["file_name"], "rater": name, "aligned": r.aligned, "style": r.style}
                for name, rs in per_rater.items() for c, r in zip(candidates, rs)]
        summary = {"raters": sorted(per_rater), "rows": len(rows),
                   "aligned_unanimous": agreement(list(per_rater.values())) if len(per_rater) > 1 else None}
        return {c["file_name"]: r for c, r in zip(candidates, merged)}, rows, summary


class ClipRetrievalRater(JudgesRater):
    """Independent of the evaluation's attribute judge: aligned = a local CLIP (eval.clip.model_path) retrieves the
    image's own prompt among the training prompts; style from the judges' style head (CLIP has no style): the
    rater's own judges where `judges` names them."""

    name = "clip_retrieval"
    audited = True

    def check(self, cfg) -> None:
        super().check(cfg)
        if not cfg.eval.clip.model_path:
            raise ConfigError("eval.clip.model_path", "hitl/rater=clip_retrieval needs a local CLIP directory")

    def ratings(self, cfg, images, prompts, training_prompts):
        from style_tailoring.curation.raters import ClipRetrievalRater as Retrieval

        aligned = Retrieval(cfg.eval.clip.model_path, training_prompts).rate(images, prompts)
        style = JudgeRater(self.rater_judges(cfg)).rate(images, prompts)
        return {self.name: [Rating(a.aligned, s.style) for a, s in zip(aligned, style)]}


class NoisyRaters(JudgesRater):
    """`raters` simulated people, each flipping the judges' `aligned` with probability `flip` and moving their style
    grade by one with probability `flip`, merged (aligned by majority, style by `style_merge`): rating noise. Two
    such people agree on a candidate with probability (1 - flip)^2 + flip^2 (conf/hitl/rater/simulated_people.yaml
    sets `flip` from a published agreement rate)."""

    name = "noisy"
    audited = True

    def __init__(self, flip: float = 0.1, raters: int = 3, style_merge: str = "mean", judges=None):
        super().__init__(judges)
        self.flip, self.raters, self.style_merge = flip, raters, style_merge

    def check(self, cfg) -> None:
        super().check(cfg)
        if not 0 <= self.flip <= 0.5:
            raise ConfigError("hitl.rater.flip", f"must lie in [0, 0.5], got {self.flip}")
        if self.raters < 1:
            raise ConfigError("hitl.rater.raters", f"must be >= 1, got {self.raters}")
        if self.style_merge not in STYLE_MERGES:
            raise ConfigError("hitl.rater.style_merge", f"must be 'mean' or 'median', got {self.style_merge!r}")

    def ratings(self, cfg, images, prompts, training_prompts):
        noisy = NoisyRater(JudgeRater(self.rater_judges(cfg)), flip=self.flip, raters=self.raters,
                           seed=cfg.seed)
        return {f"noisy-{i}": ratings for i, ratings in enumerate(noisy.individual(images, prompts))}


class PeopleRater:
    """People: the rating app's database (ROUND_DIR/ratings.sqlite) or imported files (`files`: ratings CSVs and
    Label Studio JSON exports), several raters merged (aligned by majority, style by `style_merge`)."""

    name = "people"
    needs_images = False
    audited = True

    def __init__(self, files: list[str] | None = None, style_merge: str = "mean"):
        self.files, self.style_merge = list(files or []), style_merge

    def check(self, cfg) -> None:
        if self.style_merge not in STYLE_MERGES:
            raise ConfigError("hitl.rater.style_merge", f"must be 'mean' or 'median', got {self.style_merge!r}")
        for i, f in enumerate(self.files):
            if not Path(f).expanduser().is_file():
                raise ConfigError(f"hitl.rater.files.{i}", f"no ratings file at {f}")

    def rate(self, cfg, round_dir: Path, candidates: list[dict], images, training_prompts: list[str]):
        from style_tailoring.hitl.steps import people_ratings

        return people_ratings(cfg, round_dir, candidates, self.files, self.style_merge)


def build_rater(cfg):
    """The round's rater from its node (`hitl.rater`: `_target_` and settings, from conf/hitl/rater/NAME.yaml); a
    nested `_target_` node (the rater's `judges`) stays a node, built by the rater when it rates."""
    from style_tailoring.config import build_target

    return build_target(cfg.hitl.rater, recursive=False)
