"""Quality measures on the real news prose: calibration and evaluation apart, deterministic, sane on SmolLM2."""

import pytest
import torch

from explorer.prose import documents, prose, token_chunks
from explorer.quality import compare, evaluation_ids, perplexity, reference
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
