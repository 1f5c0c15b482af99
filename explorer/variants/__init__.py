"""Attention variants of a loaded model: MHA, GQA, MQA and MLA conversions that share one attention kernel.

`convert(loaded, VariantSpec(...))` returns a `Conversion` whose `.loaded` runs like any loaded model.
"""

from explorer.kv import computed_kv, measured_cache
from explorer.variants.calibrate import Calibration, calibrate
from explorer.variants.convert import Conversion, convert
from explorer.variants.families import family_of
from explorer.variants.spec import (
    VARIANTS,
    AttentionShape,
    VariantSpec,
    attention_shape,
    cache_bytes_per_token,
    cache_values_per_token,
    cached_layout,
)

__all__ = [
    "VARIANTS",
    "AttentionShape",
    "Calibration",
    "Conversion",
    "VariantSpec",
    "attention_shape",
    "cache_bytes_per_token",
    "cache_values_per_token",
    "cached_layout",
    "calibrate",
    "computed_kv",
    "convert",
    "family_of",
    "measured_cache",
]
