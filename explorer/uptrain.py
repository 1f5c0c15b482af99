"""Uptraining: a short fine-tune that lets a converted model adapt to its new attention, beside a control.

Training-free MQA collapses and the absorbable MLA form loses quality; the GQA paper (Ainslie et al. 2023) and
MHA2MLA recover it by briefly training the converted model. The same run on the unconverted model is the control:
it shows what the training text alone does, so a recovery is judged against it, not against the original.
Training reads the first half of the prose only (`explorer.prose`); evaluation reads the second half. Results
are saved in the user cache, keyed by everything that made them, and loaded from there next time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import platform
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Literal

import torch
from filelock import FileLock
from safetensors.torch import load_file, save_file

from explorer import guard
from explorer.config import read_config
from explorer.loading import LoadedModel, cache_dir
from explorer.prose import prose
from explorer.timing import synchronize
from explorer.variants import Calibration, VariantSpec, convert
from explorer.variants.convert import fresh_copy

Scope = Literal["attention", "all"]
CONTROL = VariantSpec("original")  # the control: the unconverted model, trained the same way
ATTENTION_MODULES = {"self_attn", "attn", "attention"}  # names of attention submodules (Llama, GPT-2, BERT)
RECOVERED_WITHIN = 1.2  # a variant within 20% of the control's perplexity counts as recovered
TRAINING_SECONDS_PER_FORWARD = 3.0  # a training step costs about three forward passes (forward + backward)


@dataclass(frozen=True)
class UptrainSettings:
    """How one uptraining run trains. Every field is part of the cache key."""

    # budget
    tokens: int = 8192  # training tokens seen, in whole sequences
    sequence_tokens: int = 256  # tokens per training sequence
    batch_sequences: int = 1  # sequences per optimiser step
    # what learns
    scope: Scope = "attention"  # the attention layers' weights alone, or every weight of the model
    # schedule: linear warm-up, then cosine decay to `final_share` of the peak
    learning_rate: float = 3e-4  # peak learning rate of AdamW
    warmup_share: float = 0.1  # share of the steps spent warming up
    final_share: float = 0.1  # learning rate at the last step, as a share of the peak
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # gradient clipping
    seed: int = 0  # order of the training sequences

    def __post_init__(self) -> None:
        if self.sequence_tokens < 2 or self.batch_sequences < 1:
            raise ValueError("Train on at least one sequence of at least 2 tokens per step.")
        if self.tokens < self.sequence_tokens * self.batch_sequences:
            raise ValueError(
                f"A budget of {self.tokens:,} tokens is less than one step of {self.batch_sequences} x "
                f"{self.sequence_tokens} tokens; give at least {self.sequence_tokens * self.batch_sequences:,}."
            )
        if not 0 < self.learning_rate < 1 or not 0 <= self.warmup_share < 1 or not 0 <= self.final_share <= 1:
            raise ValueError("Choose a learning rate between 0 and 1, and warm-up and final shares between 0 and 1.")

    @property
    def steps(self) -> int:
        return math.ceil(self.tokens / (self.sequence_tokens * self.batch_sequences))

    def learning_rate_at(self, step: int) -> float:
        """The learning rate of optimiser step `step` (0-based)."""
        warmup = max(1, round(self.warmup_share * self.steps))
        if step < warmup:
            return self.learning_rate * (step + 1) / warmup
        progress = (step - warmup) / max(1, self.steps - warmup)  # 0 -> 1 over the decay
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        return self.learning_rate * (self.final_share + (1 - self.final_share) * cosine)


@dataclass
class Step:
    """One optimiser step, as reported while training runs."""

    step: int  # 1-based
    steps: int  # steps in the whole run
    tokens: int  # training tokens seen so far
    loss: float  # training loss of this step's batch (mean next-token cross-entropy, nats)
    learning_rate: float
    seconds: float  # wall time since training started


@dataclass
class Record:
    """What a finished run did; saved beside its weights as JSON."""

    model: str  # catalogue key
    variant: str  # the variant's label, e.g. "mqa kv=1 mean"
    spec: dict  # the VariantSpec, as a dict
    settings: dict  # the UptrainSettings, as a dict
    losses: list[float]  # training loss of every step
    tokens_seen: int
    epochs: float  # passes over the training text (it repeats when the budget exceeds it)
    trained_parameters: int  # weights that learned
    seconds: float  # wall time of the training loop
    device: str  # e.g. "cpu" or "cuda (NVIDIA H200)"
    precision: str  # "fp32" or "bf16 autocast, fp32 weights"
    versions: dict = field(default_factory=dict)


@dataclass
class Uptrained:
    """A converted (or control) model after uptraining."""

    loaded: LoadedModel  # the trained copy, in eval mode; runs like any loaded model
    record: Record
    from_cache: bool  # loaded from the user cache instead of trained now
    path: Path  # its folder in the cache


def training_sequences(tokenizer, sequence_tokens: int) -> torch.Tensor:
    """(N, T) every whole sequence of the training prose (the first half of the corpus, never the evaluation half)."""
    token_ids = _training_token_ids(tokenizer)
    count = len(token_ids) // sequence_tokens
    return torch.tensor(token_ids[: count * sequence_tokens]).view(count, sequence_tokens)  # (N, T)


@lru_cache(maxsize=4)
def _training_token_ids(tokenizer) -> tuple[int, ...]:
    return tuple(tokenizer(prose("training"), add_special_tokens=False)["input_ids"])


def training_batches(tokenizer, settings: UptrainSettings):
    """The (batch_sequences, sequence_tokens) batches of one run, in a seeded order, repeating the text as needed."""
    sequences = training_sequences(tokenizer, settings.sequence_tokens)  # (N, T)
    generator = torch.Generator().manual_seed(settings.seed)
    order = torch.empty(0, dtype=torch.long)
    for _ in range(settings.steps):
        if len(order) < settings.batch_sequences:  # a new pass over the text, freshly shuffled
            order = torch.cat([order, torch.randperm(len(sequences), generator=generator)])
        chosen, order = order[: settings.batch_sequences], order[settings.batch_sequences :]
        yield sequences[chosen]  # (b, T)


def run_key(loaded: LoadedModel, spec: VariantSpec, settings: UptrainSettings) -> str:
    """A folder name for one run: model, variant and a digest of every setting and the training precision."""
    what = {
        "model": loaded.entry.key,
        "spec": dataclasses.asdict(spec),
        "settings": dataclasses.asdict(settings),
        "precision": _precision(loaded.device),
    }
    digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]
    return f"{loaded.entry.key}-{spec.variant}-{settings.tokens}-{digest}"


def run_folder(loaded: LoadedModel, spec: VariantSpec, settings: UptrainSettings, root: Path | None = None) -> Path:
    return (root or cache_dir() / "uptrained") / run_key(loaded, spec, settings)


def is_saved(loaded: LoadedModel, spec: VariantSpec, settings: UptrainSettings, root: Path | None = None) -> bool:
    folder = run_folder(loaded, spec, settings, root)
    return (folder / "weights.safetensors").exists() and (folder / "record.json").exists()


def uptrain(
    loaded: LoadedModel,
    spec: VariantSpec,
    settings: UptrainSettings,
    calibration: Calibration | None = None,
    progress: Callable[[Step], None] | None = None,
    root: Path | None = None,
) -> Uptrained:
    """Convert `loaded` to `spec` (a copy; `CONTROL` copies it unchanged), train it, save it; or load a saved run.

    `loaded` is never modified. One process at a time trains a given run; another waiting on it loads its result.
    """
    if loaded.kind != "decoder":
        raise ValueError(
            f"Uptraining trains next-token prediction; {loaded.entry.label} is an {loaded.kind} model. "
            "Pick a decoder such as SmolLM2."
        )
    folder = run_folder(loaded, spec, settings, root)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        model = _starting_point(loaded, spec, calibration)
        if is_saved(loaded, spec, settings, root):
            record = Record(**json.loads((folder / "record.json").read_text()))
            _load_trained(model, folder / "weights.safetensors")
            return Uptrained(dataclasses.replace(loaded, model=model), record, True, folder)
        check_memory(loaded, model, settings)
        record = _train(model, loaded, spec, settings, progress)
        _save(model, record, settings, folder)
    return Uptrained(dataclasses.replace(loaded, model=model), record, False, folder)


def estimate_seconds(loaded: LoadedModel, settings: UptrainSettings, runs: int = 2) -> float:
    """Seconds `runs` runs should take on this device: a measured forward pass of one batch, times three per step.

    Measured on the original model (a converted one costs about the same); warm-up excluded.
    """
    batch = torch.zeros(settings.batch_sequences, settings.sequence_tokens, dtype=torch.long)  # (b, T)
    batch = batch.to(loaded.device)
    with torch.inference_mode():
        loaded.model(input_ids=batch[:, :8])  # warm-up
        started = time.perf_counter()
        loaded.model(input_ids=batch)
        synchronize(loaded.device)
        forward = time.perf_counter() - started
    return runs * settings.steps * TRAINING_SECONDS_PER_FORWARD * forward


def training_bytes(model: torch.nn.Module, config, settings: UptrainSettings) -> int:
    """Peak bytes of training `model`: fp32 weights, gradients and AdamW's two moments for the trained weights,
    and every layer's activations kept for the backward pass (attention probabilities grow with T²)."""
    dims = read_config(config)
    B, T = settings.batch_sequences, settings.sequence_tokens  # sequences per step, tokens per sequence
    weights = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in trainable_parameters(model, settings.scope).values())
    per_layer = (
        3 * B * dims.query_heads * T * T  # scores, probabilities, their gradient
        + B * T * (dims.query_heads + 2 * dims.kv_heads) * dims.head_dim  # q, k, v
        + 6 * B * T * dims.hidden_size  # residual stream, norms, attention and MLP outputs
        + 4 * B * T * (dims.intermediate_size or 4 * dims.hidden_size)  # MLP hidden states
    )
    logits = 3 * B * T * (dims.vocab_size or 0)  # logits, their softmax and its gradient
    return 4 * (weights + 3 * trained + dims.num_layers * per_layer + logits)


def check_memory(loaded: LoadedModel, model: torch.nn.Module, settings: UptrainSettings) -> None:
    """Refuse, with what to do, a run that would need more memory than this server can spare."""
    needed, limit = training_bytes(model, loaded.config, settings), guard.memory_limit()
    if needed > limit:
        advice = "train the attention weights only" if settings.scope == "all" else "use fewer sequences per step"
        raise guard.MemoryLimitError(
            f"Uptraining {loaded.entry.label} ({settings.scope} weights) needs about {guard.readable_bytes(needed)}, "
            f"more than the {guard.readable_bytes(limit)} this server can spare now; {advice}, or run it on a "
            "machine with more memory."
        )


def _starting_point(loaded: LoadedModel, spec: VariantSpec, calibration: Calibration | None) -> torch.nn.Module:
    """A private copy to train: the converted model, or for the control an unchanged copy."""
    if spec.variant == "original":
        return fresh_copy(loaded.model)
    return convert(loaded, spec, calibration).loaded.model


def trainable_parameters(model: torch.nn.Module, scope: Scope) -> dict[str, torch.nn.Parameter]:
    """The weights a run trains: those inside attention layers, or all of them (tied weights once)."""
    return {
        name: parameter
        for name, parameter in model.named_parameters()
        if scope == "all" or ATTENTION_MODULES & set(name.split("."))
    }


def _train(model, loaded: LoadedModel, spec: VariantSpec, settings: UptrainSettings, progress) -> Record:
    device = loaded.device
    model.to(device=device, dtype=torch.float32)  # fp32 weights and optimiser state on every device
    model.requires_grad_(False)
    trained = trainable_parameters(model, settings.scope)
    for parameter in trained.values():
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(
        trained.values(), lr=settings.learning_rate, betas=(0.9, 0.95), weight_decay=settings.weight_decay
    )
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    losses: list[float] = []
    text_sequences = len(training_sequences(loaded.tokenizer, settings.sequence_tokens))
    model.train()
    started = time.perf_counter()
    try:
        for step, batch in enumerate(training_batches(loaded.tokenizer, settings)):
            learning_rate = settings.learning_rate_at(step)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate
            batch = batch.to(device)  # (b, T)
            with autocast:
                loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained.values(), settings.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            if progress is not None:
                tokens = (step + 1) * settings.batch_sequences * settings.sequence_tokens
                progress(Step(step + 1, settings.steps, tokens, losses[-1], learning_rate, time.perf_counter() - started))
    finally:
        model.eval().requires_grad_(False)
        model.to(dtype=loaded.dtype)
    seconds = time.perf_counter() - started
    tokens_seen = settings.steps * settings.batch_sequences * settings.sequence_tokens
    return Record(
        model=loaded.entry.key,
        variant=spec.label(),
        spec=dataclasses.asdict(spec),
        settings=dataclasses.asdict(settings),
        losses=losses,
        tokens_seen=tokens_seen,
        epochs=tokens_seen / (text_sequences * settings.sequence_tokens),
        trained_parameters=sum(parameter.numel() for parameter in trained.values()),
        seconds=seconds,
        device=_device_name(device),
        precision=_precision(device),
        versions=_versions(),
    )


def _save(model, record: Record, settings: UptrainSettings, folder: Path) -> None:
    """Write the trained weights and the record; a half-written run is never mistaken for a saved one."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = {name: p.detach().cpu().contiguous() for name, p in trainable_parameters(model, settings.scope).items()}
    save_file(weights, str(folder / "weights.tmp"))
    (folder / "weights.tmp").replace(folder / "weights.safetensors")
    (folder / "record.json").write_text(json.dumps(dataclasses.asdict(record), indent=2) + "\n")


def _load_trained(model, path: Path) -> None:
    """Copy saved weights into a fresh starting point, refusing a file that does not fit it."""
    saved = load_file(str(path))
    parameters = dict(model.named_parameters())
    unknown = sorted(set(saved) - set(parameters))
    if unknown:
        raise ValueError(f"The saved run at {path.parent} does not fit this model ({unknown[0]}); delete the folder.")
    with torch.no_grad():
        for name, tensor in saved.items():
            assert parameters[name].shape == tensor.shape, f"{name}: {tuple(tensor.shape)} vs {parameters[name].shape}"
            parameters[name].copy_(tensor.to(parameters[name].dtype))


def _precision(device: torch.device) -> str:
    return "bf16 autocast, fp32 weights" if device.type == "cuda" else "fp32"


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"{device.type} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _versions() -> dict:
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()}
