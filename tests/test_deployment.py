"""Deployments, by hand: tensor parallelism splits KV heads until it runs out of them, MLA's latent is replicated
under TP and divided under data-parallel attention, an MoE step's memory ceiling counts its active parameters,
and the compute ceiling takes over at large batch."""

import math

import pytest

from explorer.config import read_config
from explorer.deployment import Deployment, cache_share, decode_bound, max_batch, per_gpu
from explorer.deployment import longest_context as deployed_longest_context
from explorer.hardware import gpu_named
from explorer.kv import kv_cache_size
from explorer.params import estimate_parameters

H100, H200 = gpu_named("H100 SXM"), gpu_named("H200")


def cache_per_gpu(name, count, parallel="tp", batch=8, tokens=8192):
    layout = read_config(name)
    return per_gpu(layout, estimate_parameters(layout), "bf16", Deployment(H100, count, parallel), tokens, batch).kv_cache


def test_tensor_parallel_splits_kv_heads_until_it_runs_out_of_them():
    whole = kv_cache_size(read_config("llama-3-8b"), 8192, 8).kv_cache_bytes  # 8 KV heads
    assert cache_per_gpu("llama-3-8b", 1) == whole
    assert cache_per_gpu("llama-3-8b", 2) == whole / 2
    assert cache_per_gpu("llama-3-8b", 8) == whole / 8
    assert cache_per_gpu("llama-3-8b", 16) == whole / 8  # past 8 ranks the heads are replicated
    assert cache_share(read_config("llama-3-8b"), Deployment(H100, 3)) == 3 / 8  # ceil(8 / 3) heads per rank


def test_mla_latent_is_replicated_under_tp_and_divided_under_dp_attention():
    whole = kv_cache_size(read_config("deepseek-v2"), 8192, 8).kv_cache_bytes
    assert cache_per_gpu("deepseek-v2", 1) == cache_per_gpu("deepseek-v2", 4) == whole
    assert cache_per_gpu("deepseek-v2", 4, "dp-attention") == whole / 4  # 2 of the 8 sequences per rank


def test_moe_memory_ceiling_at_batch_1_counts_the_active_parameters():
    layout = read_config("deepseek-v3")
    parameters = estimate_parameters(layout)
    bound = decode_bound(layout, parameters, "fp8", Deployment(H200, 1), 4096, 1, "bf16")
    cache = 4096 * 61 * 576 * 2
    assert bound.memory_tokens_per_s == pytest.approx(4.8e12 / (parameters.active_per_token + cache))
    assert bound.bound_by == "memory"
    eight = decode_bound(layout, parameters, "fp8", Deployment(H200, 8), 4096, 1, "bf16")
    assert eight.memory_tokens_per_s == pytest.approx(4.8e12 / (parameters.active_per_token / 8 + cache))


def test_the_compute_ceiling_takes_over_at_large_batch():
    layout = read_config("llama-3-8b")
    parameters = estimate_parameters(layout)
    deployment = Deployment(H100, 1)
    small = decode_bound(layout, parameters, "bf16", deployment, 128, 1)
    large = decode_bound(layout, parameters, "bf16", deployment, 128, 4096)
    assert small.bound_by == "memory" and large.bound_by == "compute"
    flops_per_token = 2 * parameters.active_per_token + 2 * 32 * 2 * 128 * 32 * 128  # weights + attention
    assert large.compute_tokens_per_s == pytest.approx(989.4e12 / flops_per_token)
    assert large.tokens_per_s == large.compute_tokens_per_s < large.memory_tokens_per_s


def test_capacity_of_a_deployment():
    layout = read_config("llama-3-70b")
    parameters = estimate_parameters(layout)
    two = Deployment(H100, 2)
    tokens = deployed_longest_context(layout, parameters, "bf16", two)
    held = parameters.total * 2 / 2  # bf16 weights split over 2 GPUs
    per_token = 80 * 2 * 4 * 128 * 2  # 8 KV heads split over 2 ranks: 4 each
    assert tokens == (H100.memory_bytes - held) // per_token
    batch = max_batch(layout, parameters, "bf16", two, 4096)
    assert batch == (H100.memory_bytes - held) // (4096 * per_token)
    with pytest.raises(ValueError, match="at least one GPU"):
        Deployment(H100, 0)


def test_the_command_line_answers_for_a_deployment(capsys):
    import json

    from explorer.__main__ import main

    assert main(["kv", "--config", "llama-3-8b", "--gpu", "H100 SXM", "--gpus", "2", "--parallel", "tp",
                 "--weights-dtype", "fp8", "--dtype", "bf16", "--tokens", "8192", "--batch", "4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    parameters = estimate_parameters("llama-3-8b")
    cache = 4 * 8192 * 128 * 1024 / 2  # 8 KV heads split over 2 ranks
    assert report["per_gpu_bytes"] == {"weights": parameters.total / 2, "kv_cache": cache,
                                       "total": parameters.total / 2 + cache}
    assert report["fits"] and report["bound_by"] == "memory"
    assert report["max_batch"] == (H100.memory_bytes - parameters.total // 2) // (8192 * 64 * 1024)
    assert report["longest_context"] == (H100.memory_bytes - parameters.total // 2) // (4 * 64 * 1024)
    bound = decode_bound(read_config("llama-3-8b"), parameters, "fp8", Deployment(H100, 2), 8192, 4)
    assert report["decode_tokens_per_s"] == pytest.approx(bound.tokens_per_s)
    assert main(["kv", "--config", "llama-3-8b", "--gpus", "0"]) == 2  # a sentence, not a traceback
    assert "at least one GPU" in capsys.readouterr().err


def test_the_ceilings_chart_marks_where_compute_takes_over():
    from explorer.charts.kv import ceilings_figure
    from explorer.deployment import batch_grid, ceiling_curves
    from explorer.kv import variant_layouts

    layout = read_config("llama-3-8b")
    parameters = estimate_parameters(layout)
    deployment = Deployment(H100, 1)
    batches = batch_grid(4096)
    assert batches[:3] == [1, 2, 4] and batches[-1] == 4096
    memory, compute = ceiling_curves(variant_layouts(layout), parameters, "bf16", deployment, 128, batches, "bf16")
    as_built = "GQA (8 KV heads), as built"
    at_1 = decode_bound(layout, parameters, "bf16", deployment, 128, 1)
    assert memory[as_built][0] == pytest.approx(at_1.memory_tokens_per_s)
    assert compute[as_built][0] == pytest.approx(at_1.compute_tokens_per_s)
    figure = ceilings_figure(batches, memory, compute, deployment.label)
    turn = next(i for i, (m, c) in enumerate(zip(memory[as_built], compute[as_built])) if c <= m)
    marker = next(trace for trace in figure.data if trace.mode == "markers" and trace.name.startswith(as_built))
    assert marker.x[0] == batches[turn] and marker.name.endswith(f"compute-bound from batch {batches[turn]:,}")
    with pytest.raises(ValueError, match="same variants"):
        ceilings_figure(batches, memory, {as_built: compute[as_built]}, deployment.label)


def test_data_parallel_attention_replicates_attention_and_splits_the_experts():
    """DeepSeek-V3 on 8 H200s, fp8 weights: each GPU holds all the attention weights (data-parallel attention) and an
    eighth of the rest (routed experts expert-parallel, dense MLPs, shared experts and embeddings split)."""
    layout = read_config("deepseek-v3")
    parameters = estimate_parameters(layout)
    eight = Deployment(H200, 8, "dp-attention")
    share = per_gpu(layout, parameters, "fp8", eight, 32768, 1)
    assert share.weights == parameters.attention + (parameters.total - parameters.attention) / 8  # 1 byte each
    assert share.kv_cache == 32768 * 61 * 576 * 2  # the one sequence lives on one GPU: 61 layers x 576 values
    # batch 1: the GPU with the sequence reads all its attention weights and an eighth of what the token routes to
    assert share.weight_read == parameters.attention + (parameters.read_per_step(1) - parameters.attention) / 8
    # under tensor parallelism the same GPUs keep the whole latent on every rank and an eighth of every weight
    tp = per_gpu(layout, parameters, "fp8", Deployment(H200, 8, "tp"), 32768, 8)
    assert tp.weights == parameters.total / 8 and tp.kv_cache == 8 * 32768 * 61 * 576 * 2


def test_the_reported_figures_of_deepseek_v3_and_llama_3_70b():
    """The figures the issue asks for, each from the rules above by hand."""
    layout = read_config("deepseek-v3")
    parameters = estimate_parameters(layout)
    eight = Deployment(H200, 8, "dp-attention")
    held = parameters.attention + (parameters.total - parameters.attention) / 8
    per_token = 61 * 576 * 2  # bf16 latent and RoPE key per token, all layers
    room = H200.memory_bytes - held
    assert deployed_longest_context(layout, parameters, "fp8", eight, 1, "bf16") == int(room // per_token)
    # at 32k, each GPU holds batch / 8 sequences: the largest batch is 8 x the sequences one GPU's room holds
    assert max_batch(layout, parameters, "fp8", eight, 32768, "bf16") == 8 * int(room // (32768 * per_token))
    assert decode_bound(layout, parameters, "fp8", eight, 32768, 1, "bf16").bound_by == "memory"
    assert decode_bound(layout, parameters, "fp8", eight, 32768, 64, "bf16").bound_by == "memory"
    seventy = read_config("llama-3-70b")
    held = estimate_parameters(seventy).total * 2 / 2
    assert deployed_longest_context(seventy, estimate_parameters(seventy), "bf16", Deployment(H100, 2)) == \
        (H100.memory_bytes - held) // (80 * 2 * 4 * 128 * 2)


def test_a_deployment_that_does_not_fit_has_no_decode_speed(capsys):
    import json

    from explorer.__main__ import main

    layout = read_config("deepseek-v3")
    assert not decode_bound(layout, estimate_parameters(layout), "fp8", Deployment(H200, 1), 4096).fits
    assert main(["kv", "--config", "deepseek-v3", "--gpus", "1", "--weights-dtype", "fp8", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["fits"] is False and report["decode_tokens_per_s"] is None and report["bound_by"] is None
    assert main(["kv", "--config", "deepseek-v3", "--gpus", "8", "--parallel", "dp-attention",
                 "--weights-dtype", "fp8", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["fits"] is True and report["decode_tokens_per_s"] > 0 and report["bound_by"] == "memory"


def test_each_reference_model_opens_on_a_deployment_that_serves_it():
    from explorer.config_sources import reference_models
    from explorer.deployment import default_deployment, serving_defaults

    opened = {}
    for name, config in reference_models().items():
        layout = read_config(name)
        if not layout.is_decoder or "parameters" in layout.missing:
            continue
        gpu, weights_dtype = serving_defaults(config)
        parameters = estimate_parameters(layout)
        deployment = default_deployment(layout, parameters, weights_dtype, gpu_named(gpu), 32768)
        assert per_gpu(layout, parameters, weights_dtype, deployment, 32768).fits, name  # one 32k sequence fits
        if deployment.count > 1:  # and it is the fewest that do
            fewer = Deployment(deployment.gpu, deployment.count // 2, deployment.parallel)
            assert not per_gpu(layout, parameters, weights_dtype, fewer, 32768).fits, name
        opened[name] = (deployment.label, weights_dtype)
    assert opened["deepseek-v3"] == ("8×H200 (dp-attention)", "fp8")
    assert opened["llama-3-70b"] == ("2×H100 SXM (tp)", "bf16")
    assert opened["smollm2-135m"] == ("1×H200 (tp)", "bf16")


def test_the_ceilings_against_context_mark_where_decode_turns_memory_bound():
    """1,024 sequences of Llama-3-8B on one H100: compute bounds short contexts; the cache read grows with the
    context until memory bounds it, and the chart marks that point (then the batch stops fitting)."""
    from explorer.charts.kv import ceilings_figure
    from explorer.deployment import context_ceiling_curves
    from explorer.kv import variant_layouts
    from explorer.roofline import context_grid

    layout = read_config("llama-3-8b")
    parameters = estimate_parameters(layout)
    deployment = Deployment(H100, 1)
    contexts = context_grid(2**16, points=17, min_tokens=16)
    memory, compute = context_ceiling_curves(variant_layouts(layout), parameters, "bf16", deployment, contexts, 1024,
                                             "bf16")
    as_built = "GQA (8 KV heads), as built"
    bounds = [decode_bound(layout, parameters, "bf16", deployment, tokens, 1024) for tokens in contexts]
    fitting = [bound for bound in bounds if bound.fits]
    assert fitting[0].bound_by == "compute" and fitting[-1].bound_by == "memory" and not bounds[-1].fits
    assert [m for m in memory[as_built] if not math.isnan(m)] == [b.memory_tokens_per_s for b in bounds if b.fits]
    turn = next(tokens for tokens, bound in zip(contexts, bounds) if bound.bound_by == "memory")
    figure = ceilings_figure(contexts, memory, compute, deployment.label, against="context")
    names = [trace.name for trace in figure.data if trace.mode == "markers" and trace.name.startswith(as_built)]
    assert names == [f"{as_built}: compute-bound from context 16", f"{as_built}: memory-bound from context {turn:,}"]
    assert "against context" in figure.layout.title.text


def test_under_dp_attention_a_gpu_computes_its_own_sequences_attention():
    """8 H200s, data-parallel attention, 8 sequences: each GPU computes one sequence's attention (projections and
    scores over its context) and an eighth of every sequence's MLP and expert work."""
    from explorer.deployment import decode_flops_per_token

    layout = read_config("deepseek-v3")
    parameters = estimate_parameters(layout)
    per_token = decode_flops_per_token(layout, parameters, 4096)
    over_context = per_token - 2 * parameters.active_per_token  # 61 layers x 128 heads x (2 x 512 + 64) x 2 x 4096
    assert over_context == 2 * 128 * (2 * 512 + 64) * 61 * 4096
    attention = 2 * parameters.attention + over_context
    share = per_gpu(layout, parameters, "fp8", Deployment(H200, 8, "dp-attention"), 4096, 8)
    assert share.flops == pytest.approx(attention + 8 * (per_token - attention) / 8)
    one = per_gpu(layout, parameters, "fp8", Deployment(H200, 8, "dp-attention"), 4096, 1)
    assert one.flops == pytest.approx(attention + (per_token - attention) / 8)  # batch 1: one GPU does it all
