"""The one attention kernel: softmax attention as written in the papers, masks, and shared KV heads."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from explorer.attention import attend, causal_mask, repeat_kv


def reference_attention(q, k, v, mask, scale):
    """Attention written out head by head, query by query, in float64."""
    B, H, T, _ = q.shape
    out = torch.zeros(B, H, T, v.shape[-1], dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            for i in range(T):
                scores = (k[b, h].double() @ q[b, h, i].double()) * scale + mask[0, 0, i].double()
                out[b, h, i] = torch.softmax(scores, dim=0) @ v[b, h].double()
    return out


@settings(max_examples=20, deadline=None)
@given(
    batch=st.integers(1, 2),
    heads=st.integers(1, 4),
    past=st.integers(0, 5),
    new=st.integers(1, 6),
    head_dim=st.sampled_from([2, 8, 16]),
    seed=st.integers(0, 1000),
)
def test_attend_matches_attention_written_out(batch, heads, past, new, head_dim, seed):
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, new, head_dim, generator=generator)
    k = torch.randn(batch, heads, past + new, head_dim, generator=generator)
    v = torch.randn(batch, heads, past + new, head_dim, generator=generator)
    mask = causal_mask(new, past + new, torch.float32, "cpu")  # (1, 1, T, S), decoding offset S - T
    out, probs = attend(q, k, v, mask, head_dim**-0.5)
    torch.testing.assert_close(out.double(), reference_attention(q, k, v, mask, head_dim**-0.5), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(probs.sum(-1), torch.ones(batch, heads, new))
    query_positions = torch.arange(new)[:, None] + past
    assert (probs[..., torch.arange(past + new)[None, :] > query_positions] == 0).all()  # no peeking ahead


def test_attend_matches_pytorch_causal_attention():
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 16, generator=generator) for _ in range(3))
    out, _ = attend(q, k, v, causal_mask(7, 7, torch.float32, "cpu"), 16**-0.5)
    torch.testing.assert_close(out, torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True))


def test_repeat_kv_gives_query_head_h_the_kv_head_h_over_groups():
    kv = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)  # (B, kv_heads, T, hd)
    expanded = repeat_kv(kv, 3)
    assert expanded.shape == (2, 9, 4, 5)
    for h in range(9):
        assert torch.equal(expanded[:, h], kv[:, h // 3])
    assert repeat_kv(kv, 1) is kv


def test_one_shared_kv_head_broadcasts_like_repeated_heads():
    generator = torch.Generator().manual_seed(1)
    q = torch.randn(1, 4, 5, 8, generator=generator)
    k, v = torch.randn(1, 1, 5, 8, generator=generator), torch.randn(1, 1, 5, 8, generator=generator)
    mask = causal_mask(5, 5, torch.float32, "cpu")
    shared = attend(q, k, v, mask, 0.3)
    repeated = attend(q, repeat_kv(k, 4), repeat_kv(v, 4), mask, 0.3)
    torch.testing.assert_close(shared, repeated)
