"""What every command shares: the JSON report writer, intervals as text, a variant's options."""

from __future__ import annotations


def write_report(report: dict, args) -> bool:
    """Write the JSON report to `--output` when asked; print it and say so (True) with `--json`."""
    import json
    from pathlib import Path

    text = json.dumps(report, indent=2)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + "\n")
    if args.json:
        print(text)
    return args.json


def interval(bounds, spec: str) -> str:
    return f"[{format(bounds[0], spec)}, {format(bounds[1], spec)}]"


def variant_options(parser) -> None:
    """The settings of a variant spec, as `uptrain` and `generate` take them (`--variant` is each command's own)."""
    parser.add_argument("--kv-heads", type=int, help="gqa: KV heads after conversion")
    parser.add_argument("--merge", default="mean", choices=["mean", "first", "aligned"])
    parser.add_argument("--form", default="naive", choices=["naive", "decoupled"], help="mla: RoPE form")
    parser.add_argument("--latent-rank", type=int, default=256, help="mla: latent width per token and layer")
    parser.add_argument("--rope-dims", type=int, default=32, help="mla decoupled: dims of the shared RoPE key")
    parser.add_argument("--svd", default="data", choices=["data", "plain"], help="mla: how the latent is found")
    parser.add_argument("--weighting", default="none", choices=["none", "query-output"],
                        help="mla: weigh keys by their queries and values by the output projection before the SVD")
    parser.add_argument("--value-weight", type=float, default=1.0,
                        help="mla: weight of V in the joint latent after balancing (below 1 favours keys)")
    parser.add_argument("--rank-allocation", default="uniform", choices=["uniform", "sensitivity"],
                        help="mla: the same rank in every layer, or ranks per layer from measured sensitivity")
    parser.add_argument("--rope-pairs", default="highest", choices=["highest", "norm", "rotation"],
                        help="mla decoupled: RoPE pairs kept: the highest frequencies, by their q/k 2-norms, or by norm times how far they turn")
    parser.add_argument("--refit", default="none", choices=["none", "output"],
                        help="mla: refit each layer's output projection by least squares on calibration text")


def spec_from_args(args, variant: str | None = None):
    """The VariantSpec the options of `variant_options` describe (the decoupled form attends on the latent)."""
    from explorer.variants import VariantSpec

    form = args.form
    return VariantSpec(
        variant or args.variant, kv_heads=args.kv_heads, merge=args.merge, form=form, latent_rank=args.latent_rank,
        rope_dims=args.rope_dims, svd=args.svd, weighting=args.weighting, value_weight=args.value_weight,
        rank_allocation=args.rank_allocation,
        rope_pairs=args.rope_pairs, refit=args.refit,
        attn_path=getattr(args, "path", None) or ("absorb" if form == "decoupled" else "naive"),
    )
