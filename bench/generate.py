"""Decoding under each attention variant: tokens/s with a long cache, and where a cheaper cache changes the words.

Run: `.venv/bin/python -m bench.generate [--context 1024] [--steps 32] [--json bench/results/generate-cpu.json]`.
- Speed: for each variant, the prompt is filled with news prose to `--context` tokens and prefilled; then the
  variants decode greedily in turns (`--rounds` rounds of `--steps` tokens each), so a moving machine load slows
  them alike. Decode tokens/s counts the decode steps alone (the prefill apart): each round's, and their median.
- Divergence: half-cache MLA (latent 192 of the original's 384 values per token and layer, naive form,
  data-aware latent) against the original on three prompts, greedy: the first step whose token differs, and
  the mean per-step KL on the original's context.
The load average is recorded: on a shared machine the times move with it, so read them as upper bounds.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from bench.common import report
from explorer import divergence, generate
from explorer.loading import load_model
from explorer.run import fill_with_prose
from explorer.variants import VariantSpec, convert

SPEED_VARIANTS = (
    VariantSpec("original"),
    VariantSpec("mha"),
    VariantSpec("mqa"),
    VariantSpec("mla", latent_rank=192),
    VariantSpec("mla", form="decoupled", latent_rank=160, rope_dims=32, attn_path="naive"),
    VariantSpec("mla", form="decoupled", latent_rank=160, rope_dims=32, attn_path="absorb"),
)
HALF_CACHE_MLA = VariantSpec("mla", latent_rank=192)
PROMPTS = (
    "The giant ate the apple because it was",
    "In 1969, the first people to walk on the Moon",
    "The recipe calls for two cups of flour, a pinch of salt and",
)


def decode_speed(models: dict, ids: list[int], rounds: int, steps: int) -> list[dict]:
    """Decode tokens/s of each variant after a prefill of `ids`. The variants take turns, `steps` tokens each per
    round, so that a machine whose load moves slows them alike; each round's rate is kept, and their median."""
    streams, rows = {}, {}
    for spec in SPEED_VARIANTS:
        streams[spec] = generate.generate_steps(models[spec], spec, ids, 1 + rounds * steps, stop_at_eos=False)
        prefill = next(streams[spec])
        rows[spec] = {"variant": spec.label(), "cached_tokens_at_start": prefill.cached_tokens,
                      "prefill_seconds": round(prefill.seconds, 3), "bytes_per_token_formula":
                      generate.formula_bytes_per_token(models[spec], spec), "rounds_tokens_per_second": [],
                      "load_average_1min": [round(os.getloadavg()[0], 2)]}
    for _ in range(rounds):
        for spec in SPEED_VARIANTS:
            made = [next(streams[spec]) for _ in range(steps)]
            assert all(step.cache_bytes == step.formula_bytes for step in made)
            rows[spec]["rounds_tokens_per_second"].append(round(steps / sum(step.seconds for step in made), 2))
            rows[spec]["cached_tokens_at_end"] = made[-1].cached_tokens
    for spec in SPEED_VARIANTS:
        rows[spec]["decode_tokens_per_second_median"] = float(np.median(rows[spec]["rounds_tokens_per_second"]))
        rows[spec]["load_average_1min"].append(round(os.getloadavg()[0], 2))
        print(rows[spec], flush=True)
    return list(rows.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--context", type=int, default=1024, help="cached tokens before decoding (speed)")
    parser.add_argument("--steps", type=int, default=8, help="tokens decoded per variant in each round (speed)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of decoding, the variants taking turns")
    parser.add_argument("--divergence-steps", type=int, default=48, help="tokens generated per prompt (divergence)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    loaded = load_model("smollm2", device="cpu")
    ids = generate.prompt_ids(loaded, fill_with_prose(PROMPTS[0], args.context))[: args.context]
    models = {spec: convert(loaded, spec).loaded for spec in {*SPEED_VARIANTS, HALF_CACHE_MLA}}
    speed = decode_speed(models, ids, args.rounds, args.steps)
    parted = []
    original = models[VariantSpec("original")]
    for prompt in PROMPTS:
        first = generate.generate(original, VariantSpec("original"), prompt, args.divergence_steps)
        second = generate.generate(models[HALF_CACHE_MLA], HALF_CACHE_MLA, prompt, args.divergence_steps)
        comparison = divergence.compare(first, second, original, models[HALF_CACHE_MLA])
        where = comparison.first_divergence
        parted.append({
            "prompt": prompt,
            "first_divergence_step": where,
            "shared_text": first.text if where is None else loaded.tokenizer.decode(first.token_ids[:where]),
            "original": first.text,
            "mla": second.text,
            "mean_kl_nats": round(float(comparison.kl.mean()), 4),
            "kl_before_divergence_nats": round(float(comparison.kl[:where].mean()), 4) if where else None,
        })
        print(parted[-1], flush=True)
    report({"model": "smollm2", "context": args.context, "steps": args.steps, "speed": speed,
            "half_cache_mla": HALF_CACHE_MLA.label(), "divergence": parted,
            "load_average": list(os.getloadavg())}, args.json)


if __name__ == "__main__":
    main()
