"""`generate`: token by token under a variant, the cache weighed at every step."""

from __future__ import annotations

from explorer.cli.common import spec_from_args, variant_options, write_report


def add(commands) -> None:
    generate = commands.add_parser("generate", help="generate token by token under a variant, weighing the cache")
    generate.add_argument("--model", default="smollm2")
    generate.add_argument("--text", default="The giant ate the apple because it was")
    generate.add_argument("--steps", type=int, default=32, help="tokens to generate")
    generate.add_argument("--context", type=int, default=0,
                          help="fill the prompt with news prose up to this many tokens first (0: the text alone)")
    generate.add_argument("--variant", default="original", choices=["original", "mha", "gqa", "mqa", "mla"])
    variant_options(generate)
    generate.add_argument("--path", choices=["naive", "absorb"],
                          help="mla decoupled: attend over the expanded keys (naive) or the latent (absorb, default)")
    generate.add_argument("--compare", help="a second variant on the same prompt, e.g. original, mqa, gqa-1, "
                          "mla-192, mla-160-rope32: both continuations, first divergence, per-step KL")
    generate.add_argument("--layer", type=int, default=0, help="layer whose attention rows are kept")
    generate.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    generate.add_argument("--top-k", type=int, default=0)
    generate.add_argument("--top-p", type=float, default=1.0)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--output", help="also write the JSON report to this file")
    generate.add_argument("--json", action="store_true")
    generate.set_defaults(handler=run_generate)


def run_generate(args) -> int:
    import sys

    from explorer import divergence, generate
    from explorer.loading import load_model
    from explorer.run import fill_with_prose
    from explorer.variants import convert

    spec = spec_from_args(args)
    try:
        sampling = generate.Sampling(args.temperature, args.top_k, args.top_p, args.seed)
        other = generate.compare_spec(args.compare) if args.compare else None
        if not 1 <= args.steps <= generate.MAX_STEPS:
            raise ValueError(f"Choose from 1 to {generate.MAX_STEPS} steps.")
        loaded = load_model(args.model)
        text = fill_with_prose(args.text, args.context) if args.context else args.text
        ids = generate.prompt_ids(loaded, text)[: args.context or None]
        runs = [(spec, convert(loaded, spec).loaded)]
        if other is not None:
            runs.append((other, convert(loaded, other).loaded))
        generations = [generate.generate(model, each, ids, args.steps, args.layer, sampling) for each, model in runs]
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    report = {"model": args.model, "prompt": text if not args.context else f"{args.text} (+ prose to {len(ids)} tokens)",
              "sampling": sampling.label(), **generations[0].to_json()}
    if other is not None:
        comparison = divergence.compare(generations[0], generations[1], runs[0][1], runs[1][1])
        report["compare"] = generations[1].to_json()
        report["first_divergence"] = comparison.first_divergence
        report["kl_per_step"] = [float(value) for value in comparison.kl]
    if write_report(report, args):
        return 0
    for generation in generations:
        rate = generation.decode_tokens_per_second
        print(f"{generation.label}: {generation.text!r}")
        print(f"  prefill {len(ids)} tokens in {generation.prefill_seconds:.2f} s; decode "
              f"{len(generation.steps) - 1} tokens" + (f" at {rate:.1f} tokens/s" if rate else ""))
        last = generation.steps[-1]
        print(f"  cache after {last.cached_tokens} tokens: {last.cache_bytes:,} bytes weighed, "
              f"{last.formula_bytes:,} by the formula ({generation.bytes_per_token:,} bytes per token)")
    if other is not None:
        where = report["first_divergence"]
        print(f"first divergence: {'none' if where is None else f'step {where}'}; "
              f"mean KL per step {sum(report['kl_per_step']) / len(report['kl_per_step']):.3f} nats")
    return 0
