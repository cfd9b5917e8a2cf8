"""Evaluation metrics: FID/KID (torch-fidelity), CLIP score (torchmetrics), scene diversity (pairwise, Vendi).

Nothing here downloads weights: every backbone comes from a local path, and a missing one raises
`MetricUnavailable` naming the config key to set, so evaluation can skip that metric with a one-line reason.
This module stays import-light (no torch-fidelity/transformers) because callers import the exception eagerly.
"""


class MetricUnavailable(RuntimeError):
    """A metric cannot run here (its weights or data are not on disk); `key` is the config key that would fix it."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key
