"""`variants` and `uptrain`: every variant's cache and quality; uptraining beside its control."""

from __future__ import annotations

import argparse

from explorer.cli.common import interval, spec_from_args, variant_options, write_report


def add(commands) -> None:
    variants = commands.add_parser("variants", help="attention variants of a model: cache size and quality")
    variants.add_argument("--model", default="smollm2")
    variants.add_argument("--tokens", type=int, default=8192,
                          help="held-out evaluation tokens (decoders: sequences of 256; encoders: whole documents, "
                               "at least 4); every figure comes with its 95%% interval")
    variants.add_argument("--output", help="also write the JSON report to this file")
    variants.add_argument("--json", action="store_true")
    variants.add_argument("--set", default="report", choices=["report", "refined"],
                          help="report: every variant the model's shape allows; refined: the training-free "
                               "refinements of MLA at half of SmolLM2's cache, each beside what it refines")
    variants.add_argument("--variant", choices=["gqa", "mqa", "mla", "mha"],
                          help="measure the original and this one variant (its settings below) instead of the "
                               "report's whole list")
    variant_options(variants)
    variants.set_defaults(handler=run_variants)
    uptrain = commands.add_parser("uptrain", help="uptrain a converted model briefly, beside the same run unconverted")
    uptrain.add_argument("--model", default="smollm2")
    uptrain.add_argument("--variant", default="mqa", choices=["gqa", "mqa", "mla", "mha"])
    variant_options(uptrain)
    uptrain.add_argument("--tokens", type=int, default=8192, help="training tokens (budget)")
    uptrain.add_argument("--scope", default="attention", choices=["attention", "all"], help="what learns")
    uptrain.add_argument("--batch", type=int, default=1, help="sequences of 256 tokens per optimiser step")
    uptrain.add_argument("--learning-rate", type=float, help="peak learning rate of AdamW")
    uptrain.add_argument("--eval-tokens", type=int, default=8192,
                         help="held-out tokens scored (in sequences of 256), with 95%% intervals")
    uptrain.add_argument("--no-control", action="store_true", help="skip the control run on the unconverted model")
    uptrain.add_argument("--output", help="also write the JSON report to this file")
    uptrain.add_argument("--json", action="store_true")
    uptrain.set_defaults(handler=run_uptrain)


def run_variants(args) -> int:
    import sys

    from explorer.loading import load_model
    from explorer.variants.report import variant_report

    rows: list[dict] = []

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)
        if args.output:  # a long run keeps what it has measured so far, marked unfinished
            write_report({"model": args.model, "unfinished": True, "eval_tokens": args.tokens, "variants": rows},
                          argparse.Namespace(output=args.output, json=False))

    from explorer.variants.report import SPEC_SETS

    specs = SPEC_SETS[args.set]
    if args.variant:
        from explorer.variants import VariantSpec

        specs = (VariantSpec("original"), spec_from_args(args))
    try:
        report = variant_report(load_model(args.model), specs, eval_tokens=args.tokens, progress=progress, rows=rows)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    if write_report(report, args):
        return 0
    if report.get("weights"):
        print(report["weights"])
    print(f"{report['eval_tokens']:,} held-out tokens; [low, high]: {report['intervals']}")
    if report["kind"] == "encoder":  # no LM head: sentence-embedding closeness instead of perplexity
        print(f"{'variant':<48} {'KV/token/layer':>14} {'emb. cos [95%]':>26} {'rank corr':>9} {'hidden err':>10} "
              f"{'convert s':>9}")
        for row in report["variants"]:
            values = row["kv_values_per_token_per_layer"]["measured"]
            cosine = f"{row['embedding_cosine']:.4f} {interval(row['embedding_cosine_ci'], '.4f')}"
            print(f"{row['label']:<48} {values:>14.0f} {cosine:>26} "
                  f"{row['similarity_rank_correlation']:>9.3f} {row['hidden_relative_error']:>10.4f} "
                  f"{row['conversion_seconds']:>9.2f}")
    else:
        print(f"{'variant':<48} {'KV/token/layer':>14} {'ppl [95%]':>30} {'KL':>7} {'top-1':>6} {'within 5%':>10}")
        for row in report["variants"]:
            values = row["kv_values_per_token_per_layer"]["measured"]
            ppl = f"{row['perplexity']:.1f} {interval(row['perplexity_ci'], ',.1f')}"
            print(f"{row['label']:<48} {values:>14.0f} {ppl:>30} {row['kl']:>7.3f} "
                  f"{row['top1_agreement']:>6.2f} {row['within_5_percent']:>10}")
    for comparison in report["comparisons"]:
        print(f"{comparison['claim']} ({comparison['a']} vs {comparison['b']}): {comparison['verdict']}, "
              f"{comparison['value']:.3f} {interval(comparison['ci'], '.3f')}")
    return 0


def run_uptrain(args) -> int:
    import dataclasses
    import sys

    from explorer.loading import load_model
    from explorer.uptrain import UptrainSettings
    from explorer.uptrain_report import uptrain_report
    spec = spec_from_args(args)
    try:
        settings = UptrainSettings(tokens=args.tokens, scope=args.scope, batch_sequences=args.batch)
        if args.learning_rate is not None:
            settings = dataclasses.replace(settings, learning_rate=args.learning_rate)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2

    def progress(run: str, step) -> None:
        if step.step == step.steps or step.step % 10 == 0:
            print(f"{run}: step {step.step}/{step.steps}, {step.tokens:,} tokens, loss {step.loss:.3f}, "
                  f"{step.seconds:.0f} s", file=sys.stderr, flush=True)

    try:
        report = uptrain_report(load_model(args.model), spec, settings, args.eval_tokens, not args.no_control, progress)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    if write_report(report, args):
        return 0
    print(f"{report['variant']} on {args.model}, {settings.tokens:,} training tokens ({settings.scope}), "
          f"{report['eval_tokens']:,} held-out tokens; original perplexity {report['original']['perplexity']:.2f} "
          f"{interval(report['original']['perplexity_ci'], '.2f')}")
    rows = [("before uptraining", report["before"]), ("after uptraining", report["variant_after"])]
    if "control_after" in report:
        rows.append(("control (unconverted, same training)", report["control_after"]))
    for name, row in rows:
        print(f"  {name:<38} perplexity {row['perplexity']:>12,.2f} {interval(row['perplexity_ci'], ',.2f'):>22}  "
              f"KL {row['kl']:.3f}  top-1 {row['top1_agreement']:.2f}")
    if "after_vs_control" in report:
        print(f"  after / control perplexity: {report['after_vs_control']:.2f} "
              f"{interval(report['after_vs_control_ci'], '.2f')} (paired); recovered (within 20%): "
              f"{report['recovered']}")
    return 0
