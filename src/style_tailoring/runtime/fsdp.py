"""Sharded training (`trainer=fsdp`): the denoiser's weights, gradients and AdamW moments split across the ranks.

Lightning's `FSDPStrategy` wraps torch's FSDP1, which does not run on CPUs at all (Lightning refuses it: "The
strategy `fsdp` requires a GPU accelerator"; torch itself: "FSDP needs a non-CPU accelerator device"). FSDP2
(`torch.distributed.fsdp.fully_shard`, parameters as DTensors) runs on gloo as well as NCCL, and Lightning drives it
through `ModelParallelStrategy`, which leaves the sharding to the module's `configure_model`. So `trainer.strategy:
fsdp` is that strategy, data-parallel over every rank (no tensor parallelism), with the collective timeout of
`launch.timeout_s`, and checkpoints consolidated to one full file on rank 0, which goes through `SafeCheckpointIO`
(atomic, CRC-checked) like every other run's.

Only the denoiser is sharded, block by block: the frozen VAE and text encoders stay whole on every rank, as under
DDP. A whole copy of the denoiser is needed again to export it or sample from it: its weights are gathered from the
shards into a weightless copy of its structure made before sharding (`weightless_copy`, `whole_state`).
"""

from __future__ import annotations

import copy
from datetime import timedelta

import torch


def fsdp_strategy(world: int, timeout_s: float):
    """Lightning's ModelParallelStrategy as plain FSDP2 over `world` ranks, full checkpoints on rank 0."""
    from lightning.pytorch.strategies import ModelParallelStrategy

    # save_distributed_checkpoint=False: a folder of per-rank shards would bypass the checkpoint IO (no atomic
    # write, no CRC, no ckpt_path=last fallback); one consolidated file keeps those guarantees.
    return ModelParallelStrategy(data_parallel_size=world, tensor_parallel_size=1, save_distributed_checkpoint=False,
                                 timeout=timedelta(seconds=float(timeout_s)))


def shard_units(denoiser: torch.nn.Module) -> list[torch.nn.Module]:
    """The denoiser's blocks that become FSDP units: the modules of the classes it names in diffusers'
    `_no_split_modules` (the blocks diffusers keeps on one device: a UNet's resnet and attention blocks, a
    transformer's joint blocks), or, for a model without that list (UNetMotionModel), the entries of its block
    lists. Outermost first (pre-order)."""
    names = set(getattr(denoiser, "_no_split_modules", None) or ())
    units = [m for m in denoiser.modules() if m is not denoiser and type(m).__name__ in names]
    if not units:
        units = [m for child in denoiser.children() if isinstance(child, torch.nn.ModuleList) for m in child]
    return units


def shard_denoiser(denoiser: torch.nn.Module, mesh) -> int:
    """Shards `denoiser` in place over `mesh`: each unit of `shard_units`, innermost first (a unit then owns the
    parameters not already in a unit inside it), then the denoiser itself (embeddings, norms, conv_in / conv_out).
    Its parameter names, and so the checkpoint's keys, stay the same. Returns the number of units."""
    from torch.distributed.fsdp import fully_shard

    units = shard_units(denoiser)
    for unit in reversed(units):
        fully_shard(unit, mesh=mesh)
    fully_shard(denoiser, mesh=mesh)
    return len(units) + 1


def weightless_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of `module` whose state-dict tensors (parameters, persistent buffers) are on the meta device, so it
    costs no memory; its other buffers are copied. `load_state_dict(whole_state(...), assign=True)` makes it a
    whole model again."""
    memo = {}
    for tensor in module.state_dict(keep_vars=True).values():
        empty = torch.empty_like(tensor, device="meta")
        # deepcopy returns memo[id(x)] for x: every parameter (tied ones once) is replaced, not copied
        memo[id(tensor)] = torch.nn.Parameter(empty, tensor.requires_grad) \
            if isinstance(tensor, torch.nn.Parameter) else empty
    return copy.deepcopy(module, memo)


def whole_state(module: torch.nn.Module, everywhere: bool = True) -> dict[str, torch.Tensor]:
    """A sharded module's state dict with every tensor whole, in CPU memory, one tensor gathered at a time (a
    collective: every rank calls it): on every rank, or with `everywhere=False` on rank 0 alone (the others keep
    none of it: an empty dict), for a whole model only rank 0 writes."""
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    keep = everywhere or dist.get_rank() == 0
    state = {}
    for name, value in module.state_dict().items():
        whole = value.full_tensor() if isinstance(value, DTensor) else value
        if keep:
            state[name] = whole.detach().cpu()
    return state


def whole_copy(skeleton: torch.nn.Module, sharded: torch.nn.Module, everywhere: bool = True):
    """A whole, unsharded model: a fresh weightless copy of `skeleton` holding the weights gathered from `sharded`
    (collective), in `sharded`'s train/eval mode; None on the ranks that keep nothing (`whole_state`)."""
    state = whole_state(sharded, everywhere)
    if not state:
        return None
    whole = weightless_copy(skeleton)
    whole.load_state_dict(state, assign=True)
    return whole.train(sharded.training)
