"""The news prose used to calibrate, uptrain and evaluate variants: gensim's Lee background corpus, in two halves.

Calibration and uptraining read documents from the first half only and evaluation from the second, so nothing a
variant is fitted or trained on is ever scored.
"""

from __future__ import annotations

import importlib.metadata
from functools import lru_cache
from pathlib import Path
from typing import Literal

import torch

CORPUS_FILE = "gensim/test/test_data/lee_background.cor"  # ~300 news documents, one per line
Slice = Literal["calibration", "training", "evaluation"]  # calibration and training: the first half


def corpus_path() -> Path:
    """Where gensim's Lee background corpus lies (found without importing gensim)."""
    try:
        distribution = importlib.metadata.distribution("gensim")
    except importlib.metadata.PackageNotFoundError as error:
        raise FileNotFoundError(
            "The evaluation prose comes with gensim; install it with `pip install --no-deps gensim`."
        ) from error
    return Path(distribution.locate_file(CORPUS_FILE))


@lru_cache(maxsize=1)
def documents() -> tuple[str, ...]:
    """Every document of the corpus, in file order."""
    lines = corpus_path().read_text(encoding="utf-8", errors="replace").splitlines()
    return tuple(line.strip() for line in lines if line.strip())


def prose(part: Slice) -> str:
    """The first half of the documents (calibration, training) or the second half (evaluation), as one text."""
    docs = documents()
    middle = len(docs) // 2
    chosen = docs[middle:] if part == "evaluation" else docs[:middle]
    return "\n\n".join(chosen)


def token_chunks(tokenizer, part: Slice, num_chunks: int, chunk_tokens: int) -> torch.Tensor:
    """(num_chunks, chunk_tokens) token ids: consecutive chunks from the start of one half of the corpus."""
    token_ids = tokenizer(prose(part), add_special_tokens=False)["input_ids"]
    needed = num_chunks * chunk_tokens
    if len(token_ids) < needed:
        raise ValueError(
            f"The {part} prose has {len(token_ids)} tokens; ask for at most {len(token_ids) // chunk_tokens} "
            f"chunks of {chunk_tokens} tokens."
        )
    return torch.tensor(token_ids[:needed]).view(num_chunks, chunk_tokens)  # (N, T)
