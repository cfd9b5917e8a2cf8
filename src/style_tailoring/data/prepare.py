"""`data.prepare`: a callable named in the config that puts the data on disk before the sources are scanned."""

from __future__ import annotations

from omegaconf import OmegaConf


def prepare_data(data) -> None:
    """Run `data.prepare` (a Hydra `_target_` with its arguments), e.g. the Sticker World's data set generator,
    which writes what is missing and returns at once when everything is there."""
    if data.prepare:
        from hydra.utils import instantiate

        spec = data.prepare if isinstance(data.prepare, dict) else OmegaConf.to_container(data.prepare, resolve=True)
        instantiate(spec, _convert_="all")
