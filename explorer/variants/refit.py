"""Least-squares refit of a converted model's output projections, so each head hands the residual stream what the
original head did, rather than only keeping the original's keys and values.

A conversion keeps what its K/V approximation can (`explorer.variants.convert`); the error it leaves, in keys (through
the attention weights) and in values, reaches the residual stream through the output projection W_O. With both
models reading the same calibration prose, each converted head's output ô_h (what enters W_O) and the original
head's output o_h are known. The hd × hd map M_h that best turns one into the other is a ridge regression pulled
towards the identity, M_h = (E[o ôᵀ] + λI)(E[ô ôᵀ] + λI)⁻¹, and W_O,h becomes W_O,h M_h. An exact conversion gets
M_h = I. The cache is unchanged (only W_O moves), so the absorbed path stays exact (W_UV still folds into W_O).

Layers are refitted in order, each on the inputs that the already-refitted layers before it produce (GPTQ-style
sequential calibration), so a layer also corrects drift the earlier layers left.
"""

from __future__ import annotations

import time

import torch

from explorer.variants.calibrate import calibration_inputs
from explorer.variants.families import family_of

RIDGE = 1e-2  # λ as a share of the mean diagonal of E[ô ôᵀ]: directions the calibration text barely uses stay put


@torch.inference_mode()
def refit_outputs(original, converted, tokens: int) -> float:
    """Refit every converted layer's output projection, in place on `converted` (a copy; `original` is untouched).

    `tokens` of calibration prose are read. Returns the seconds it took. BERT keeps its output projection outside
    the attention layer and is refused before this runs (`families.BertFamily.check`).
    """
    started = time.perf_counter()
    rows = calibration_inputs(original, tokens)
    family = family_of(original.config, original.entry.label)
    original_heads = [family.output_projection(layer) for layer in family.attention_modules(original.model)]
    original_blocks = [parent for parent, _ in family.attention_slots(original.model)]
    targets, calls = _record_pass(original.model, original_heads, original_blocks, rows)  # L x (N, H*hd)
    hidden = [states for states, _, _ in calls[0]]  # block 0's input per row: the embeddings, alike in both models
    blocks = [parent for parent, _ in family.attention_slots(converted.model)]
    for index, (block, layer) in enumerate(zip(blocks, family.attention_modules(converted.model))):
        heads = _head_outputs(block, layer, hidden, calls[index])  # (N, H*hd)
        weight = layer.o_proj.weight.double()  # (D, H*hd)
        hd = layer.head_dim
        for h in range(weight.shape[1] // hd):
            columns = slice(h * hd, (h + 1) * hd)
            weight[:, columns] = weight[:, columns] @ towards_identity(heads[:, columns], targets[index][:, columns])
        layer.o_proj.weight.copy_(weight)
        hidden = [_block_output(block, states, args, kwargs) for states, (_, args, kwargs) in zip(hidden, calls[index])]
    return time.perf_counter() - started


def towards_identity(inputs: torch.Tensor, target: torch.Tensor, ridge: float = RIDGE) -> torch.Tensor:
    """M (d, d) minimising Σₜ ‖target_t − M inputs_t‖² + λ‖M − I‖²: inputs and target (N, d), λ = ridge · mean
    E[x²] of the inputs."""
    gram = inputs.T @ inputs / len(inputs)  # (d, d) E[ô ôᵀ]
    cross = target.T @ inputs / len(inputs)  # (d, d) E[o ôᵀ]
    damping = ridge * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype)  # (d, d)
    return torch.linalg.solve(gram + damping, (cross + damping).T).T  # (cross + λI)(gram + λI)⁻¹, gram symmetric


def _record_pass(model, layers, blocks, rows):
    """One pass of the original over every row: the input of each of `layers` (N, width) float64, and each block's
    call per row as (hidden states, other args, kwargs), so blocks can be rerun one at a time on new inputs."""
    inputs = [[] for _ in layers]
    calls = [[] for _ in blocks]
    handles = [layer.register_forward_pre_hook(lambda m, a, i=i: inputs[i].append(a[0].flatten(0, 1).double().cpu()))
               for i, layer in enumerate(layers)]
    handles += [block.register_forward_pre_hook(lambda m, a, k, i=i: calls[i].append(_split_call(a, k)),
                                                with_kwargs=True) for i, block in enumerate(blocks)]
    try:
        for row in rows:
            model(input_ids=row.to(model.device), use_cache=False)  # no cache: blocks are rerun one at a time
    finally:
        for handle in handles:
            handle.remove()
    return [torch.cat(chunks) for chunks in inputs], calls


def _head_outputs(block, layer, hidden, calls) -> torch.Tensor:
    """The input of `layer`'s output projection (N, H·hd) float64, with `block` run on each row's hidden states."""
    seen = []
    handle = layer.o_proj.register_forward_pre_hook(lambda module, args: seen.append(args[0].flatten(0, 1)))
    try:
        for states, (_, args, kwargs) in zip(hidden, calls):
            _block_output(block, states, args, kwargs)
    finally:
        handle.remove()
    return torch.cat(seen).double().cpu()


def _split_call(args, kwargs):
    """(hidden states, other positional args, other kwargs) of a block's call."""
    kwargs = dict(kwargs)
    if "hidden_states" in kwargs:
        return kwargs.pop("hidden_states"), args, kwargs
    return args[0], args[1:], kwargs


def _block_output(block, hidden, args, kwargs) -> torch.Tensor:
    output = block(hidden, *args, **kwargs)
    return output[0] if isinstance(output, tuple) else output  # (B, T, D)
