"""Evaluation metrics: FID/KID (torch-fidelity), CLIP score (torchmetrics), scene diversity (pairwise, Vendi)."""


class MetricUnavailable(RuntimeError):
    """A metric cannot run here (its weights are not on disk); `key` is the config key that would fix it."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key
