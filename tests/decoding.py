"""One check shared by the conversion tests: a converted decoder caches what the formula says, and decoding
token by token from that cache gives the logits of one full pass."""

from __future__ import annotations

import torch

from explorer.variants import attention_shape, cache_values_per_token, measured_cache


def assert_cache_and_decoding(model, config, spec, input_ids: torch.Tensor, steps: int, atol: float) -> None:
    """Cache values and float32 bytes per layer equal the formula; the last `steps` tokens decoded one at a time
    from the cache match the full pass within `atol`."""
    values, sizes = measured_cache(model, input_ids)
    formula = cache_values_per_token(spec, attention_shape(config))
    assert values == formula
    assert sizes == [4 * n for n in formula]  # float32
    T = input_ids.shape[1]
    with torch.inference_mode():
        full = model(input_ids=input_ids).logits  # (1, T, V)
        cache, decoded = model(input_ids=input_ids[:, : T - steps], use_cache=True).cache, []
        for position in range(T - steps, T):
            step = model(input_ids=input_ids[:, position : position + 1], cache=cache, use_cache=True)
            cache = step.cache
            decoded.append(step.logits[:, -1])  # (1, V)
    torch.testing.assert_close(torch.stack(decoded, dim=1), full[:, -steps:], atol=atol, rtol=1e-4)
