"""Which heads a conversion hurts: how far each head's attention moved, and what each head's change costs the loss.

Attention moved: the Jensen-Shannon divergence (bits, 0 to 1) between a head's original and converted attention
rows, averaged over the queries that have a choice (every query but the first of a causal decoder, whose only key
is itself).

Effect on the loss: the mean next-token loss on the text changes by about

    ΔL(layer, head) ≈ Σ_t ∂L/∂z_t · (z'_t - z_t)

when only that head's output z (its slice of the input to the layer's output projection, at every position t) is
replaced by the converted model's z' (attribution patching: one forward and one backward pass of the original
give every head's estimate). It is a first-order estimate; `patched_loss` measures the real change for a head by
running the original with that one slice replaced. Hooks live for one pass of the calling thread and are removed
after it; gradients are taken with respect to the captured outputs only, so no weight of the shared model gets a
`.grad` or changes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from explorer.loading import LoadedModel
from explorer.run import attention_modules

CHECKED_HEADS = 3  # heads whose first-order estimate is checked by real patching (one forward pass each)


@dataclass(frozen=True)
class PatchCheck:
    """One head's estimated loss change beside the change measured by patching its output."""

    layer: int
    head: int
    estimate: float  # nats, first order
    patched: float  # nats, measured: loss with this head's output from the converted model, minus the original's


@dataclass(frozen=True)
class Damage:
    """Every head of a conversion: how far its attention moved and what its change costs, on one text."""

    js: np.ndarray  # (L, H) bits: JS divergence of attention rows, mean over queries with a choice
    loss_effect: np.ndarray  # (L, H) nats: first-order estimate of the loss change from this head alone
    loss_original: float  # mean next-token loss of the original on the text, nats
    loss_converted: float  # the same for the converted model
    checks: tuple[PatchCheck, ...]  # the largest estimates, checked by real patching
    num_tokens: int  # tokens of the text

    def ranked(self, by: str = "js", top: int = 10) -> list[dict]:
        """The `top` heads by JS divergence ("js") or by |loss effect| ("loss"), as table rows."""
        score = self.js if by == "js" else np.abs(self.loss_effect)
        order = np.argsort(-score, axis=None)[:top]
        patched = {(c.layer, c.head): c.patched for c in self.checks}
        rows = []
        for rank, flat in enumerate(order, start=1):
            layer, head = (int(i) for i in np.unravel_index(flat, score.shape))
            rows.append({"rank": rank, "head": f"L{layer} H{head}", "layer": layer, "head_index": head,
                         "js_bits": float(self.js[layer, head]),
                         "loss_estimate_nats": float(self.loss_effect[layer, head]),
                         "loss_patched_nats": patched.get((layer, head))})
        return rows


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence in bits between distributions along the last axis (0: equal, 1: disjoint)."""
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    m = (p + q) / 2

    def kl(a: np.ndarray) -> np.ndarray:
        ratio = np.divide(a, m, out=np.ones_like(a), where=a > 0)  # 0·log(0/m) counts 0
        return (a * np.log2(ratio)).sum(axis=-1)

    return np.clip((kl(p) + kl(q)) / 2, 0.0, 1.0)


def attention_shift(original: np.ndarray, converted: np.ndarray, causal: bool = True) -> np.ndarray:
    """(L, H) mean JS divergence over queries between two runs' attention (L, H, T, T) of the same tokens.

    A causal decoder's first query sees only itself (JS 0 whatever the variant) and is left out of the mean.
    """
    if original.shape != converted.shape:
        raise ValueError(f"Compare runs of the same tokens: shapes {original.shape} and {converted.shape} differ.")
    first = 1 if causal and original.shape[-2] > 1 else 0
    return js_divergence(original[..., first:, :], converted[..., first:, :]).mean(axis=-1)  # (L, H)


def _projections(loaded: LoadedModel) -> list[torch.nn.Linear]:
    modules, _ = attention_modules(loaded.model)
    projections = [getattr(module, "o_proj", None) for module in modules]
    if not all(isinstance(p, torch.nn.Linear) for p in projections):
        raise ValueError(f"{loaded.name} has no output projection `o_proj` in its attention layers; the damage view "
                         "reads decoders such as SmolLM2 and Gemma-3.")
    return projections


def _head_dim(loaded: LoadedModel) -> int:
    config = loaded.config
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _mean_loss(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of logits (1, T, V) on input_ids (1, T), over the T - 1 predictions."""
    return F.cross_entropy(logits[0, :-1].float(), input_ids[0, 1:])


def head_outputs(loaded: LoadedModel, input_ids: torch.Tensor) -> tuple[float, torch.Tensor]:
    """(loss, z (L, T, H, hd)): the mean loss on input_ids (1, T) and each head's output at each position."""
    projections, owner = _projections(loaded), threading.get_ident()
    captured: dict[int, torch.Tensor] = {}

    def keep(layer: int, inputs) -> None:
        if threading.get_ident() == owner:
            captured[layer] = inputs[0][0].detach()  # (T, H*hd)

    hooks = [p.register_forward_pre_hook(lambda _m, inputs, layer=layer: keep(layer, inputs))
             for layer, p in enumerate(projections)]
    try:
        with torch.inference_mode():
            ids = input_ids.to(loaded.device)
            loss = _mean_loss(loaded.model(input_ids=ids, use_cache=False).logits, ids).item()
    finally:
        for hook in hooks:
            hook.remove()
    T, H = input_ids.shape[1], loaded.config.num_attention_heads
    z = torch.stack([captured[layer].float().cpu() for layer in range(len(projections))])  # (L, T, H*hd)
    return loss, z.view(len(projections), T, H, -1)  # (L, T, H, hd)


def loss_gradients(loaded: LoadedModel, input_ids: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
    """(loss, z, dL/dz): each head's output (L, T, H, hd) and the gradient of the mean loss with respect to it,
    from one forward and one backward pass. Only the captured outputs are differentiated: no weight gets a grad."""
    projections, owner = _projections(loaded), threading.get_ident()
    captured: dict[int, torch.Tensor] = {}

    def keep(layer: int, inputs) -> None:
        if threading.get_ident() == owner:
            captured[layer] = inputs[0]  # (1, T, H*hd), part of the graph

    hooks = [p.register_forward_pre_hook(lambda _m, inputs, layer=layer: keep(layer, inputs))
             for layer, p in enumerate(projections)]
    try:
        with torch.enable_grad():
            ids = input_ids.to(loaded.device)
            # the graph starts at the embeddings, so it exists whether or not the weights require grad
            embeds = loaded.model.get_input_embeddings()(ids).detach().requires_grad_(True)  # (1, T, D)
            loss = _mean_loss(loaded.model(inputs_embeds=embeds, use_cache=False).logits, ids)
            outputs = [captured[layer] for layer in range(len(projections))]
            grads = torch.autograd.grad(loss, outputs)
    finally:
        for hook in hooks:
            hook.remove()
    T, H = input_ids.shape[1], loaded.config.num_attention_heads
    z = torch.stack([o[0].detach().float().cpu() for o in outputs]).view(len(outputs), T, H, -1)  # (L, T, H, hd)
    dz = torch.stack([g[0].float().cpu() for g in grads]).view(len(outputs), T, H, -1)  # (L, T, H, hd)
    return loss.item(), z, dz


def first_order_effects(dz: torch.Tensor, z: torch.Tensor, z_converted: torch.Tensor) -> np.ndarray:
    """(L, H) estimated loss change per head: Σ over positions and dims of dL/dz · (z' - z), all (L, T, H, hd)."""
    # l layer, t position, h head, d head dim
    return torch.einsum("lthd,lthd->lh", dz.double(), (z_converted - z).double()).numpy()  # (L, H)


def patched_loss(loaded: LoadedModel, input_ids: torch.Tensor, layer: int, head: int,
                 replacement: torch.Tensor) -> float:
    """The mean loss on input_ids (1, T) with head `head` of layer `layer` outputting `replacement` (T, hd) instead
    of its own output; every other head, and every later layer, computes as usual."""
    projection, owner, hd = _projections(loaded)[layer], threading.get_ident(), _head_dim(loaded)

    def swap(_module, inputs):
        if threading.get_ident() != owner:
            return None
        (states,) = inputs  # (1, T, H*hd), heads side by side, head-major
        states = states.clone()
        states[0, :, head * hd : (head + 1) * hd] = replacement.to(states.dtype)
        return (states,)

    hook = projection.register_forward_pre_hook(swap)
    try:
        with torch.inference_mode():
            ids = input_ids.to(loaded.device)
            return _mean_loss(loaded.model(input_ids=ids, use_cache=False).logits, ids).item()
    finally:
        hook.remove()


def measure_damage(original: LoadedModel, converted: LoadedModel, token_ids: list[int], original_attention: np.ndarray,
                   converted_attention: np.ndarray, checked: int = CHECKED_HEADS) -> Damage:
    """Every head's attention shift and loss effect for a conversion on one text (its runs' attention (L, H, T, T)),
    with the `checked` largest estimates measured by real patching."""
    if original.kind != "decoder":
        raise ValueError(f"{original.name} is not a decoder: the loss effect of a head needs next-token predictions; "
                         "choose SmolLM2 or Gemma-3.")
    if len(token_ids) < 2:
        raise ValueError("The text is one token long: type a sentence, so that there is a next token to predict.")
    input_ids = torch.tensor([token_ids])  # (1, T)
    js = attention_shift(original_attention, converted_attention)
    loss, z, dz = loss_gradients(original, input_ids)
    loss_converted, z_converted = head_outputs(converted, input_ids)
    effects = first_order_effects(dz, z, z_converted)
    checks = []
    for flat in np.argsort(-np.abs(effects), axis=None)[:checked]:
        layer, head = (int(i) for i in np.unravel_index(flat, effects.shape))
        patched = patched_loss(original, input_ids, layer, head, z_converted[layer, :, head])
        checks.append(PatchCheck(layer, head, float(effects[layer, head]), patched - loss))
    return Damage(js, effects, loss, loss_converted, tuple(checks), len(token_ids))


def checks_sentence(damage: Damage) -> str:
    """The first-order estimates beside real patching, and the whole conversion's loss change, in words."""
    checks = "; ".join(f"L{c.layer} H{c.head}: estimate {c.estimate:+.4f}, patched {c.patched:+.4f}"
                       for c in damage.checks)
    return (f"Loss on the text ({damage.num_tokens} tokens): {damage.loss_original:.3f} nats for the original, "
            f"{damage.loss_converted:.3f} converted. The loss effects are first-order estimates (gradient × change "
            f"of the head's output); replacing only that head's output in the original and re-running gives the "
            f"real change for the largest ones ({checks} nats). Heads interact, so the effects need not add up to "
            "the whole change.")
