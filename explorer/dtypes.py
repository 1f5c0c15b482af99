"""Number formats, by the names the pages, the URL and the command line use ("bf16", "fp8"), and their bits.

Weights and cache each have their own dtype: bf16 or fp8 weights beside an fp8 cache are common. Quantised
formats (fp8, int4) also keep scales; those are not counted here.
"""

from __future__ import annotations

DTYPE_BITS: dict[str, int] = {"fp32": 32, "fp16": 16, "bf16": 16, "fp8": 8, "int4": 4}
NAME_OF_BYTES: dict[int, str] = {4: "fp32", 2: "bf16", 1: "fp8"}  # a torch dtype's itemsize -> its name here


def dtype_bits(dtype: str, what: str = "cache") -> int:
    """Bits of one value in `dtype`; a sentence that lists the choices for an unknown name."""
    if dtype not in DTYPE_BITS:
        raise ValueError(f"Unknown {what} dtype '{dtype}': choose one of {', '.join(DTYPE_BITS)}.")
    return DTYPE_BITS[dtype]


def dtype_of_bytes(itemsize: int) -> str:
    """The name of a format of `itemsize` bytes per value (4 -> fp32, 2 -> bf16, 1 -> fp8)."""
    if itemsize not in NAME_OF_BYTES:
        raise ValueError(f"No number format of {itemsize} bytes per value: use 4, 2 or 1.")
    return NAME_OF_BYTES[itemsize]
