"""Quality measures on the real news prose: calibration and evaluation apart, deterministic, sane on SmolLM2."""

import numpy as np
import pytest
import torch

from explorer.prose import documents, prose, token_chunks
from explorer.quality import (
    CANT_TELL,
    below,
    better,
    blocks,
    bootstrap,
    compare,
    evaluation_ids,
    perplexity,
    ratio,
    ratio_interval,
    reference,
)
from explorer.variants import VariantSpec, convert


def test_calibration_and_evaluation_prose_share_no_document():
    calibration, evaluation = prose("calibration"), prose("evaluation")
    assert len(documents()) == 300
    assert not set(calibration.split("\n\n")) & set(evaluation.split("\n\n"))
    assert len(calibration) > 100_000 and len(evaluation) > 100_000


def test_token_chunks_and_too_many_chunks(smollm2):
    chunks = token_chunks(smollm2.tokenizer, "evaluation", 3, 64)
    assert chunks.shape == (3, 64)
    with pytest.raises(ValueError, match="ask for at most"):
        token_chunks(smollm2.tokenizer, "evaluation", 10_000, 512)


def test_perplexity_is_exp_of_mean_negative_log_likelihood():
    logits = torch.zeros(1, 4, 10)  # uniform over 10 tokens
    assert perplexity(logits, torch.tensor([[1, 2, 3, 4]])) == pytest.approx(10.0)


def test_original_against_itself(smollm2):
    ref = reference(smollm2.model, evaluation_ids(smollm2.tokenizer, chunks=1, chunk_tokens=128))
    same = compare(smollm2.model, ref)
    assert same.perplexity == pytest.approx(ref.perplexity)
    assert same.max_logit_diff == 0 and same.top1_agreement == 1 and abs(same.kl) < 1e-9
    assert 10 < ref.perplexity < 100  # real weights on news prose (random weights: tens of thousands)
    assert same.tokens == 127


def test_quality_is_deterministic_and_kl_orders_the_merges(smollm2):
    ref = reference(smollm2.model, evaluation_ids(smollm2.tokenizer, chunks=1, chunk_tokens=128))
    mean_model = convert(smollm2, VariantSpec("mqa", merge="mean")).loaded.model
    first = compare(convert(smollm2, VariantSpec("mqa", merge="first")).loaded.model, ref)
    once, again = compare(mean_model, ref), compare(mean_model, ref)
    assert (once.perplexity, once.kl, once.top1_agreement) == (again.perplexity, again.kl, again.top1_agreement)
    assert 0 < once.kl < first.kl
    assert 0 <= first.top1_agreement < once.top1_agreement < 1


def test_encoder_quality_measures_on_known_embeddings():
    from explorer.quality import _pair_similarities, _rank_correlation

    scores = torch.tensor([0.1, 0.5, 0.3, 0.9])
    assert _rank_correlation(scores, scores * 2) == pytest.approx(1.0)
    assert _rank_correlation(scores, -scores) == pytest.approx(-1.0)
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    assert _pair_similarities(embeddings).tolist() == pytest.approx([0.0, 2**-0.5, 2**-0.5])  # pairs (0,1) (0,2) (1,2)


def test_encoder_documents_keep_special_tokens_and_their_cap(minilm):
    from explorer.quality import document_ids

    rows = document_ids(minilm.tokenizer, "evaluation", count=5, max_tokens=64)
    assert len(rows) == 5 and all(row.shape[0] == 1 and row.shape[1] <= 64 for row in rows)
    assert all(row[0, 0] == minilm.tokenizer.cls_token_id and row[0, -1] == minilm.tokenizer.sep_token_id for row in rows)


def test_the_bootstrap_interval_matches_the_normal_one_and_is_the_same_every_run():
    values = np.random.default_rng(1).normal(3.0, 1.0, size=400)  # (C,) one number per chunk
    low, high = bootstrap(values)
    half_width = 1.96 * values.std() / np.sqrt(len(values))  # what the central limit theorem says
    assert low < values.mean() < high
    assert (high - low) / 2 == pytest.approx(half_width, rel=0.15)
    assert bootstrap(values) == (low, high)  # seeded
    assert bootstrap(np.full(10, 2.5)) == (2.5, 2.5)
    with pytest.raises(ValueError, match="at least two chunks"):
        bootstrap([1.0])


def test_weights_count_tokens_and_a_statistic_reads_several_columns():
    # two kinds of chunk: 3 tokens at 1.0 and 1 token at 5.0: the token-weighted mean is 2.0, not 3.0
    values, weights = np.array([1.0, 5.0] * 50), np.array([3, 1] * 50)
    low, high = bootstrap(values, weights)
    assert low < 2.0 < high and high < 3.0
    pairs = np.stack([values * 2, values], 1)  # (C, 2): the ratio of column means is exactly 2 in every resample
    assert bootstrap(pairs, weights, statistic=lambda m: m[:, 0] / m[:, 1]) == pytest.approx((2.0, 2.0))


def test_a_paired_ratio_cancels_what_both_models_share():
    rng = np.random.default_rng(0)
    difficulty = rng.normal(3.0, 1.0, size=(8, 256))  # (N, P) per-token loss that both models feel
    a = blocks({"nll": torch.tensor(difficulty + 0.1 + rng.normal(0, 0.05, size=(8, 256)))})
    b = blocks({"nll": torch.tensor(difficulty)})
    assert len(a["tokens"]) == 32 and set(a["tokens"]) == {64}
    low, high = ratio_interval(a, b)
    assert low < ratio(a, b) < high and low < np.exp(0.1) < high
    unpaired = np.exp(bootstrap(a["nll"], a["tokens"]))  # a's perplexity alone: its hard passages spread it
    assert (high - low) < (unpaired[1] - unpaired[0]) / np.exp(3.1) / 10  # relative width: paired is far narrower
    with pytest.raises(ValueError, match="same evaluation blocks"):
        ratio_interval(a, blocks({"nll": torch.tensor(difficulty[:4])}))


def test_a_verdict_comes_from_the_interval_not_the_point():
    assert below((1.01, 1.04), 1.05) == "yes"
    assert below((1.06, 1.20), 1.05) == "no"
    assert below((1.00, 1.10), 1.05) == CANT_TELL == "can't tell at this size"
    assert better((0.2, 0.9), 1.0) == "yes" and better((0.9, 1.1), 1.0) == CANT_TELL
    assert better((1.0, 1.0), 1.0) == "no"  # two exact conversions: equal, so neither beats the other
    assert better((0.01, 0.03), 0.0, lower_is_better=False) == "yes"  # a cosine difference: higher is better
    assert better((-0.03, -0.01), 0.0, lower_is_better=False) == "no"


def test_every_figure_of_a_real_comparison_carries_its_interval(smollm2):
    ref = reference(smollm2.model, evaluation_ids(smollm2.tokenizer, chunks=2, chunk_tokens=128))
    assert ref.perplexity_ci[0] < ref.perplexity < ref.perplexity_ci[1]
    assert ref.blocks["tokens"] == [64, 63, 64, 63]
    same = compare(smollm2.model, ref)
    assert same.perplexity_ratio == 1.0 and same.perplexity_ratio_ci == (1.0, 1.0)  # paired: identical logits
    assert same.perplexity_ci == pytest.approx(ref.perplexity_ci)
    mqa = compare(convert(smollm2, VariantSpec("mqa", merge="mean")).loaded.model, ref)
    for point, (low, high) in ((mqa.perplexity, mqa.perplexity_ci), (mqa.kl, mqa.kl_ci),
                               (mqa.top1_agreement, mqa.top1_agreement_ci),
                               (mqa.perplexity_ratio, mqa.perplexity_ratio_ci)):
        assert low <= point <= high and low < high
    assert mqa.perplexity_ratio == pytest.approx(mqa.perplexity / ref.perplexity)
    assert 1 < mqa.perplexity_ratio_ci[0]  # training-free MQA is worse than the original, and the interval says so
