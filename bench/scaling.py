"""Scaling: prefill time and attention memory against sequence length, and decode tokens/s per attention variant
against context, measured on this machine's device with SmolLM2's shapes and weights on the fast path (SDPA).

Run: `.venv/bin/python -m bench.scaling [--max-tokens 8192] [--json bench/results/scaling-<device>.json]`.
Prints the figures; with `--json` writes them with the device, dtype, library versions and date. On a GPU the
default lengths go to 32k and decoding runs a batch of 16 sequences (at batch 1 a small model's step is bound by
kernel launches, not by reading the cache).
"""

from __future__ import annotations

import argparse

import torch

from explorer import scaling
from explorer.loading import load_model


def main(argv: list[str] | None = None) -> scaling.ScalingResults:
    gpu = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=32768 if gpu else 8192, help="longest prefill length")
    parser.add_argument("--min-tokens", type=int, default=128, help="shortest prefill length")
    parser.add_argument("--contexts", type=int, nargs="+", default=None,
                        help="decode contexts (default: 512 up to --max-tokens, by powers of 2)")
    parser.add_argument("--batch", type=int, default=16 if gpu else 1, help="sequences decoded together")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per point (median), after a warm-up")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: the best available)")
    parser.add_argument("--max-materialised-gib", type=float, default=3.0,
                        help="skip materialised attention where its T×T tensors exceed this")
    parser.add_argument("--layers", type=int, default=None,
                        help="decode with only the first N layers (quick checks; default: every layer)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 gives steadier times on a CPU shared with other work)")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model("smollm2", device=args.device)
    if args.layers:
        loaded = scaling.first_layers(loaded, args.layers)
    lengths = scaling.length_grid(args.max_tokens, args.min_tokens)
    contexts = args.contexts or scaling.length_grid(args.max_tokens, min(512, args.max_tokens))

    def progress(fraction: float, message: str) -> None:
        print(f"[{fraction:4.0%}] {message}", flush=True)

    results = scaling.run_scaling(
        loaded, lengths, contexts, args.batch, args.repeats, int(args.max_materialised_gib * 2**30), progress
    )
    report(results)
    if args.json:
        print(f"wrote {scaling.save_results(results, args.json)}")
    return results


def report(results: scaling.ScalingResults) -> None:
    info = results.info
    print(f"\n{results.label}; torch {info.torch}, transformers {info.transformers}; {info.date}; "
          f"load average {info.load_average}")
    print("\nPrefill, one layer, batch 1 (median seconds; bytes of the attention intermediates)")
    print(f"{'T':>7} {'materialised':>13} {'SDPA':>10} {'rest':>10} {'layer':>10} "
          f"{'mat. bytes':>12} {'SDPA bytes':>11}")
    for p in results.prefill:
        materialised = f"{p.attention_materialised_s:.4f}" if p.attention_materialised_s is not None else "skipped"
        mat_bytes = f"{p.attention_materialised_bytes:,}" if p.attention_materialised_bytes is not None else "-"
        print(f"{p.tokens:>7,} {materialised:>13} {p.attention_sdpa_s:>10.4f} {p.rest_of_layer_s:>10.4f} "
              f"{p.layer_sdpa_s:>10.4f} {mat_bytes:>12} {p.attention_sdpa_bytes:>11,}")
    low, high = results.fit_range
    print(f"\nLog-log slopes fitted over {low:,}-{high:,} tokens:")
    for name, slope in results.slopes.items():
        print(f"  time   {name:<26} {slope:.2f}")
    for name, slope in results.memory_slopes.items():
        print(f"  memory {name:<26} {slope:.2f}")
    contexts, series = results.decode_series()
    print(f"\nDecode, whole model, batch {results.decode_batch} (tokens/s)")
    print(f"{'variant':<14}" + "".join(f"{c:>10,}" for c in contexts))
    for name, values in series.items():
        print(f"{name:<14}" + "".join(f"{v:>10.1f}" for v in values))
    print(f"\nAt {contexts[-1]:,} tokens, relative to MHA: "
          + ", ".join(f"{name} {ratio:.2f}x" for name, ratio in scaling.speedups_over_mha(results).items()))
    print("Absorbed / naive MLA: "
          + ", ".join(f"{c:,}: {ratio:.2f}x" for c, ratio in scaling.absorbed_over_naive(results).items()))
    for note in results.notes:
        print(f"- {note}")


if __name__ == "__main__":
    main()
