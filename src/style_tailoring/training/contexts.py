"""ICO (Jin et al., ECCV 2024, the training side of DCI): learnable per-image context vectors in the prompt.

A fixed template ("sks style") makes every training image share one prompt, so whatever the images have besides the
style (their content, layout, background) can only be explained by the identifier, which then carries content into
every generation. ICO gives each training image of the chosen sources its own `n_ctx` context vectors, inserted into
its prompt right after the start token ("[c1 … cn] sks style"): they absorb what is particular to the image, and they
are dropped at inference, where the plain prompt is used.

Mechanics: the prompt is tokenized as usual, `n_ctx` placeholder ids are inserted after the start token (the start
token's own id, which is never the end token the pooled output looks for), and a forward hook on the text encoder's
token embedding swaps the placeholders' embeddings for the image's vectors. The text encoder itself is untouched
(and stays frozen unless model.train_text_encoder), so the exported pipeline knows nothing of the contexts; they are
saved beside it (`ico_contexts.safetensors` + `ico_contexts.json`: which file each row belongs to).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
from torch import nn


class ImageContexts(nn.Module):
    """`n_ctx` learnable vectors per item of each ICO source, initialised from the token embeddings of a template."""

    def __init__(self, sizes: dict[str, int], n_ctx: int, init_embeddings: torch.Tensor):
        super().__init__()
        if n_ctx < 1:
            raise ValueError(f"n_ctx must be >= 1, got {n_ctx}")
        init = init_embeddings.detach().float()
        rows = init[torch.arange(n_ctx) % len(init)]  # the template's words, repeated to n_ctx
        self.n_ctx, self.sources = n_ctx, list(sizes)
        self.vectors = nn.ParameterDict({
            name: nn.Parameter(rows.unsqueeze(0).repeat(size, 1, 1).clone()) for name, size in sizes.items()})

    def lookup(self, sources: list[str], items: torch.Tensor) -> torch.Tensor:
        """The vectors of each (source, item), N×n_ctx×d (rows of non-ICO sources are never looked up)."""
        return torch.stack([self.vectors[s][int(i)] for s, i in zip(sources, items.tolist())])

    def save(self, directory: Path, file_names: dict[str, list[str]]) -> None:
        """The learned vectors (safetensors, one tensor per source) and which file each row belongs to."""
        from safetensors.torch import save_file

        from style_tailoring.io import atomic_dir

        with atomic_dir(Path(directory)) as tmp:
            save_file({name: p.detach().cpu().contiguous() for name, p in self.vectors.items()},
                      str(tmp / "ico_contexts.safetensors"))
            (tmp / "ico_contexts.json").write_text(json.dumps(
                {"n_ctx": self.n_ctx, "rows": {name: file_names.get(name, []) for name in self.sources}}, indent=1))


def insert_placeholders(ids: torch.Tensor, rows: torch.Tensor, n_ctx: int, placeholder: int,
                        eos: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids with `n_ctx` placeholders after the start token in the `rows` marked True (the prompt shifted right,
    its tail cut, the end token kept); and the placeholder mask."""
    out, mask = ids.clone(), torch.zeros_like(ids, dtype=torch.bool)
    length = ids.shape[1]
    for r in torch.nonzero(rows).flatten().tolist():
        shifted = torch.cat([ids[r, :1], torch.full((n_ctx,), placeholder, dtype=ids.dtype), ids[r, 1:]])[:length]
        if not (shifted == eos).any():  # the prompt filled the window: its end token goes last
            shifted[-1] = eos
        out[r] = shifted
        mask[r, 1:1 + n_ctx] = True
    return out, mask


@contextlib.contextmanager
def injected(embedding: nn.Module, mask: torch.Tensor, vectors: torch.Tensor):
    """While active, `embedding`'s output at the `mask` positions is `vectors` (rows in mask order)."""
    def swap(module, args, output):
        output = output.clone()
        output[mask.to(output.device)] = vectors.reshape(-1, vectors.shape[-1]).to(output)
        return output

    handle = embedding.register_forward_hook(swap)
    try:
        yield
    finally:
        handle.remove()


def encode_with_contexts(comps, texts: list[str], is_ico: torch.Tensor, vectors: torch.Tensor,
                         device) -> torch.Tensor:
    """encoder_hidden_states of `texts`, the rows marked `is_ico` with their context vectors (`vectors`, one
    n_ctx×d block per marked row, in order) after the start token. SD-style single text encoder; the gradient
    reaches the vectors (and the encoder when it trains)."""
    tokenizer, encoder = comps.tokenizer, comps.text_encoder
    ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    placeholder = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else int(ids[0, 0])
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else int(ids[0].max())
    ids, mask = insert_placeholders(ids, is_ico.cpu(), vectors.shape[1], placeholder, eos)
    ids = ids.to(device)
    with injected(encoder.get_input_embeddings(), mask, vectors):
        return encoder(ids)[0]


def template_embeddings(comps, template: str) -> torch.Tensor:
    """The token embeddings of `template`'s words (no start/end tokens): the contexts' initial value."""
    ids = comps.tokenizer(template, add_special_tokens=False, return_tensors="pt").input_ids[0]
    if len(ids) == 0:
        raise ValueError(f"strategy.ico.init: {template!r} has no tokens")
    with torch.no_grad():
        return comps.text_encoder.get_input_embeddings()(ids.to(comps.text_encoder.device)).cpu()
