"""`kv`: the KV cache of any config, its variants and a deployment on GPUs."""

from __future__ import annotations


def add(commands) -> None:
    kv = commands.add_parser("kv", help="KV-cache size of a model and its attention variants")
    kv.add_argument("--config", required=True, help="reference name (e.g. llama-2-7b), config.json path, or hub id")
    kv.add_argument("--tokens", type=int, default=4096, help="context length per sequence")
    kv.add_argument("--batch", type=int, default=1, help="sequences held at once")
    kv.add_argument("--dtype", default="bf16", help="cache dtype: fp32, bf16, fp16, fp8 or int4")
    kv.add_argument("--weights-dtype", default="bf16", help="weights dtype, apart from the cache's: fp32, bf16, "
                    "fp16, fp8 or int4")
    kv.add_argument("--gpu", default="H200", help="GPU model of the deployment: RTX 4090, L40S, A100 80GB SXM, "
                    "H100 SXM or H200")
    kv.add_argument("--gpus", type=int, default=1, help="GPUs in the deployment (1-8 per node, several nodes)")
    kv.add_argument("--parallel", default="tp", choices=["tp", "dp-attention"],
                    help="tensor parallel (weights and KV heads split), or data-parallel attention (each GPU keeps "
                    "its own sequences' cache; the rest split)")
    kv.add_argument("--json", action="store_true")
    kv.set_defaults(handler=run_kv)


def run_kv(args) -> int:
    import json
    import sys

    from explorer import deployment as serving
    from explorer.config import read_config
    from explorer.hardware import GPUS, gpu_named
    from explorer.kv import kv_cache_size, variant_layouts
    from explorer.params import estimate_parameters
    from explorer.roofline import decode_roofline, longest_context

    try:
        layout = read_config(args.config)
        if layout.kind == "encoder-decoder":
            raise ValueError(f"{layout.name} is an encoder-decoder model; this calculator covers decoder-only "
                             "models (and encoders, which keep no cache).")
        size = kv_cache_size(layout, args.tokens, args.batch, args.dtype)
        gpu = gpu_named(args.gpu)
        deployment = serving.Deployment(gpu, args.gpus, args.parallel)
        parameters = None if "parameters" in layout.missing else estimate_parameters(layout)
        weights = None if parameters is None else parameters.weights(args.weights_dtype)
        weight_bytes = None if weights is None else weights.total_bytes
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    variants = [kv_cache_size(each, args.tokens, args.batch, args.dtype) for each in variant_layouts(layout)]
    point = None if weights is None or not layout.is_decoder else decode_roofline(
        layout, gpu, args.tokens, weights, args.batch, args.dtype)
    report = {
        "config": args.config,
        "name": layout.name,
        "variant": layout.label,
        "tokens": args.tokens,
        "batch": args.batch,
        "dtype": args.dtype,
        "weights_dtype": args.weights_dtype,
        "bytes_per_token": size.bytes_per_token,
        "kv_cache_bytes": size.kv_cache_bytes,
        "explanation": size.explanation,
        "weight_bytes_estimate": weight_bytes,
        "cannot_compute": dict(layout.missing),
        "longest_context_on_one_gpu": None if weights is None else {
            gpu.name: longest_context(layout, gpu.memory_bytes, weights, args.batch, args.dtype) for gpu in GPUS},
        **_deployment_fields(serving, layout, parameters, deployment, args),
        "decode_roofline": None if point is None else {
            "gpu": gpu.name, "weight_read_bytes": point.weight_read_bytes, "kv_cache_bytes": point.kv_cache_bytes,
            "fits": point.fits, "tokens_per_second": point.tokens_per_second},
        "variants": [
            {"variant": each.layout.legend, "bytes_per_token": each.bytes_per_token, "kv_cache_bytes": each.kv_cache_bytes}
            for each in variants
        ],
        "fields_used": layout.fields_used,
        "notes": list(layout.notes),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{layout.name}: {layout.label}, {args.tokens:,} tokens x {args.batch}, cache in {args.dtype}, "
          f"weights in {args.weights_dtype}")
    print(f"  {size.explanation}")
    weights_text = "cannot be computed" if weight_bytes is None else f"{weight_bytes / 2**30:,.2f} GiB"
    print(f"  cache: {size.kv_cache_bytes / 2**30:,.3f} GiB; weights (estimate): {weights_text}")
    for each in variants:
        print(f"  {each.layout.legend:<34} {each.bytes_per_token / 1024:>10,.2f} KiB/token {each.kv_cache_bytes / 2**30:>10,.3f} GiB")
    for gpu_name, tokens in (report["longest_context_on_one_gpu"] or {}).items():
        verdict = {None: "memory sets no limit (the cache stops growing)", 0: "the weights do not fit"}
        print(f"  longest context on {gpu_name}: {verdict[tokens] if tokens in verdict else f'{tokens:,} tokens'}")
    if point is not None:
        fits = "" if point.fits else " (weights and cache do not fit on one)"
        print(f"  decode bound on one {gpu.name}: {point.tokens_per_second:,.1f} tokens/s{fits}, reading "
              f"{point.weight_read_bytes / 2**30:,.2f} GiB of weights and {point.kv_cache_bytes / 2**30:,.3f} GiB of "
              "cache per step")
    if report["per_gpu_bytes"] is not None:
        share = report["per_gpu_bytes"]
        print(f"  on {deployment.label}: per GPU {share['weights'] / 2**30:,.1f} GiB weights + "
              f"{share['kv_cache'] / 2**30:,.2f} GiB cache = {share['total'] / 2**30:,.1f} GiB of "
              f"{gpu.memory_gib:g} GiB ({'fits' if report['fits'] else 'does not fit'}); longest context "
              f"{report['longest_context']}, largest batch at {args.tokens:,} tokens {report['max_batch']:,}; "
              + (f"decode {report['decode_tokens_per_s']:,.1f} tokens/s for the batch, bound by {report['bound_by']}"
                 if report["fits"] else "no decode speed: weights and cache do not fit on these GPUs"))
    for reason in layout.missing.values():
        print(f"  cannot compute: {reason}")
    for note in layout.notes:
        print(f"  note: {note}")
    return 0


def _deployment_fields(serving, layout, parameters, deployment, args) -> dict:
    """The deployment's figures for `kv`'s JSON (None where the config cannot give the weights)."""
    names = ("per_gpu_bytes", "fits", "longest_context", "max_batch", "decode_tokens_per_s", "bound_by")
    if parameters is None or not layout.is_decoder:
        return dict.fromkeys(names)
    share = serving.per_gpu(layout, parameters, args.weights_dtype, deployment, args.tokens, args.batch, args.dtype)
    bound = serving.decode_bound(layout, parameters, args.weights_dtype, deployment, args.tokens, args.batch,
                                 args.dtype)
    return {
        "deployment": {"gpu": deployment.gpu.name, "gpus": deployment.count, "parallel": deployment.parallel},
        "per_gpu_bytes": {"weights": share.weights, "kv_cache": share.kv_cache, "total": share.total},
        "fits": share.fits,
        "longest_context": serving.longest_context(layout, parameters, args.weights_dtype, deployment, args.batch,
                                                   args.dtype),
        "max_batch": serving.max_batch(layout, parameters, args.weights_dtype, deployment, args.tokens, args.dtype),
        "decode_tokens_per_s": bound.tokens_per_s if bound.fits else None,  # null: this deployment cannot run
        "bound_by": bound.bound_by if bound.fits else None,
    }
