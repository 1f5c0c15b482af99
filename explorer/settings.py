"""Settings of one running explorer, read once from environment variables: hosted mode and its limits.

`read_settings()` never guesses silently: a value it cannot use raises `SettingsError` with a sentence naming
the variable, so a host's misconfiguration shows in its log at start-up instead of as odd behaviour later.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Mapping

HOSTED_MAX_INPUT_TOKENS = 512  # a small CPU host draws SmolLM2's 30 layers x 9 heads at 512 tokens in ~1 s
LOCAL_MAX_INPUT_TOKENS = 2048  # the longest context the overview accepts (explorer.run.MAX_LONG_TOKENS)
HOSTED_MAX_UPTRAIN_TOKENS = 2048  # two runs of 8 steps: about a minute on a small CPU host
LOCAL_MAX_UPTRAIN_TOKENS = 2_097_152  # the largest budget the variant lab offers (on a GPU)
HOSTED_MODELS = ("smollm2", "minilm", "whisper-tiny-en")  # small models with safetensors copies on the hub
HOSTED_MAX_AUDIO_BYTES, LOCAL_MAX_AUDIO_BYTES = 2_000_000, 20_000_000  # largest recorded or uploaded WAV
HOSTED_MAX_AUDIO_SECONDS, LOCAL_MAX_AUDIO_SECONDS = 15, 30  # longest clip heard (30 s: one Whisper window)
DEFAULT_MEMORY_FRACTION = 0.5  # share of the memory available at run time that one run may plan to use


class SettingsError(ValueError):
    """An environment variable holds a value the explorer cannot use; the message names it and says why."""


@dataclass(frozen=True)
class Settings:
    """How this explorer process behaves; read from the environment by `read_settings`."""

    # hosting
    hosted: bool = False  # ATTENTION_EXPLORER_HOSTED=1 (or a Hugging Face Space, which sets SPACE_ID):
    # a public demo on a small CPU host: catalogue models only, no local folders, shorter inputs
    offline: bool = False  # HF_HUB_OFFLINE=1: never reach the Hugging Face hub
    # inputs
    max_input_tokens: int = LOCAL_MAX_INPUT_TOKENS  # ATTENTION_EXPLORER_MAX_TOKENS: longest input run, in
    # tokens (longer text is cut with a notice); hosted default 512
    max_uptrain_tokens: int = LOCAL_MAX_UPTRAIN_TOKENS  # ATTENTION_EXPLORER_MAX_UPTRAIN_TOKENS: the largest
    # training budget the variant lab offers; hosted default 2048
    # models
    allowed_models: tuple[str, ...] | None = None  # ATTENTION_EXPLORER_MODELS="smollm2,minilm": the only
    # model keys (or hub ids) that may load; None allows any catalogue key, hub id or local folder.
    # Hosted default: smollm2 and minilm
    allow_local_paths: bool = True  # False when hosted: a model key that names a folder is refused
    # audio (the cross-attention page's Whisper)
    max_audio_bytes: int = LOCAL_MAX_AUDIO_BYTES  # ATTENTION_EXPLORER_MAX_AUDIO_BYTES ("2MB"): largest WAV taken
    max_audio_seconds: int = LOCAL_MAX_AUDIO_SECONDS  # ATTENTION_EXPLORER_MAX_AUDIO_SECONDS (1-30): longer clips
    # are cut to their start, with a notice; hosted defaults 2 MB and 15 s
    # memory guard
    memory_limit_bytes: int | None = None  # ATTENTION_EXPLORER_MEMORY_LIMIT ("1.5GB", "800MB", bytes): the
    # most one run or model load may plan to use; None: `memory_fraction` of the memory available then
    memory_fraction: float = DEFAULT_MEMORY_FRACTION  # ATTENTION_EXPLORER_MEMORY_FRACTION, in (0, 1]

    def allows_model(self, key: str) -> bool:
        """May this process load `key` (a catalogue key, hub id or folder)?"""
        return self.allowed_models is None or key in self.allowed_models

    def hub_fallback(self) -> bool:
        """Load a catalogue model's hub copy when its package is missing: on an online host only, because a
        host's requirements file cannot install the weight packages with `--no-deps`."""
        return self.hosted and not self.offline


def read_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings named by environment variables (`os.environ` unless given); see `Settings` for each."""
    env = os.environ if environ is None else environ
    hosted_value = env.get("ATTENTION_EXPLORER_HOSTED")
    hosted = _flag(env, "ATTENTION_EXPLORER_HOSTED") if hosted_value not in (None, "") else bool(env.get("SPACE_ID"))
    max_tokens_default = HOSTED_MAX_INPUT_TOKENS if hosted else LOCAL_MAX_INPUT_TOKENS
    max_input_tokens = _whole_number(
        env, "ATTENTION_EXPLORER_MAX_TOKENS", max_tokens_default, 1, LOCAL_MAX_INPUT_TOKENS
    )
    max_uptrain_tokens = _whole_number(
        env, "ATTENTION_EXPLORER_MAX_UPTRAIN_TOKENS",
        HOSTED_MAX_UPTRAIN_TOKENS if hosted else LOCAL_MAX_UPTRAIN_TOKENS, 2048, LOCAL_MAX_UPTRAIN_TOKENS,
    )
    models_value = env.get("ATTENTION_EXPLORER_MODELS", "").strip()
    if models_value:
        allowed_models = tuple(name.strip() for name in models_value.split(",") if name.strip())
        if not allowed_models:
            raise SettingsError(
                f"ATTENTION_EXPLORER_MODELS={models_value!r} names no model; list model keys, e.g. smollm2,minilm."
            )
    else:
        allowed_models = HOSTED_MODELS if hosted else None
    return Settings(
        hosted=hosted,
        offline=_flag(env, "HF_HUB_OFFLINE"),
        max_input_tokens=max_input_tokens,
        max_uptrain_tokens=max_uptrain_tokens,
        allowed_models=allowed_models,
        allow_local_paths=not hosted,
        max_audio_bytes=_byte_size(env, "ATTENTION_EXPLORER_MAX_AUDIO_BYTES")
        or (HOSTED_MAX_AUDIO_BYTES if hosted else LOCAL_MAX_AUDIO_BYTES),
        max_audio_seconds=_whole_number(env, "ATTENTION_EXPLORER_MAX_AUDIO_SECONDS",
                                        HOSTED_MAX_AUDIO_SECONDS if hosted else LOCAL_MAX_AUDIO_SECONDS, 1,
                                        LOCAL_MAX_AUDIO_SECONDS),
        memory_limit_bytes=_byte_size(env, "ATTENTION_EXPLORER_MEMORY_LIMIT"),
        memory_fraction=_fraction(env, "ATTENTION_EXPLORER_MEMORY_FRACTION", DEFAULT_MEMORY_FRACTION),
    )


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise SettingsError(f"{name}={value!r} is not understood; set it to 1 (on) or 0 (off).")


def _whole_number(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        raise SettingsError(f"{name}={value!r} is not understood; set it to a whole number from {low} to {high}.")
    return number


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def _byte_size(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name, "").strip()
    if not value:
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([a-zA-Z]*)", value)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS or float(match.group(1)) <= 0:
        raise SettingsError(
            f"{name}={value!r} is not understood; give a size such as 1.5GB, 800MB or 2GiB (or plain bytes)."
        )
    return int(float(match.group(1)) * _UNITS[unit])


def _fraction(env: Mapping[str, str], name: str, default: float) -> float:
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        fraction = float(value)
    except ValueError:
        fraction = None
    if fraction is None or not 0 < fraction <= 1:
        raise SettingsError(f"{name}={value!r} is not understood; give a fraction above 0 and at most 1, e.g. 0.5.")
    return fraction
