"""GPUs: the memory a framework can allocate (GiB), peak memory bandwidth and peak dense tensor FLOPs, each with
where the figure comes from.

Vendors write memory in decimal "GB" on the box, and the card keeps some for itself: an "80 GB" H100 shows
81,559 MiB in nvidia-smi and PyTorch reports a total capacity of 79.11 GiB. The fits and rooflines use what
PyTorch reports (`torch.cuda.get_device_properties(0).total_memory`, also printed in its out-of-memory errors
as "total capacity"). Bandwidth is decimal (1 GB/s = 1e9 bytes/s), as vendors state it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class GPU:
    """One accelerator: memory, peak memory bandwidth and peak dense tensor throughput."""

    name: str  # product name, e.g. "H100 SXM"
    # memory
    memory_gb: float  # as the vendor states it, decimal GB ("80 GB")
    memory_gib: float  # what a framework can allocate, in GiB (2^30 bytes): PyTorch's total capacity
    memory_source: str  # where memory_gib comes from
    # speed
    bandwidth_gb_per_s: float  # peak memory bandwidth in GB/s (1e9 bytes per second)
    bf16_tflops: float  # peak dense BF16 tensor throughput, TFLOP/s (no sparsity)
    fp8_tflops: float | None  # peak dense FP8 tensor throughput (None: no FP8 tensor cores)
    source: str  # the datasheet behind memory_gb, bandwidth and FLOPs

    @property
    def memory_bytes(self) -> int:
        """Bytes a framework can allocate on this GPU."""
        return int(self.memory_gib * 2**30)

    @property
    def bandwidth_bytes_per_s(self) -> float:
        return self.bandwidth_gb_per_s * 1e9

    def peak_flops(self, dtype: str = "bf16") -> float:
        """Peak dense tensor FLOP/s for matrix products in `dtype` (fp8 falls back to bf16 where absent)."""
        tflops = self.fp8_tflops if dtype == "fp8" and self.fp8_tflops else self.bf16_tflops
        return tflops * 1e12


GPUS: tuple[GPU, ...] = (
    GPU("RTX 4090", 24, 23.65, "PyTorch out-of-memory reports on an RTX 4090: '23.65 GiB total capacity' "
        "(e.g. github.com/tloen/llama-int8 issue 7); nvidia-smi shows 24,564 MiB",
        1008, 165.2, 330.3,
        "NVIDIA Ada Lovelace architecture whitepaper, RTX 4090 (24 GB GDDR6X, 1,008 GB/s; 165.2 dense BF16 and "
        "330.3 dense FP8 tensor TFLOPS with FP32 accumulate)"),
    GPU("L40S", 48, 44.99, "nvidia-smi memory.total of an L40S: 46,068 MiB (e.g. github.com/akash-network/"
        "provider-configs pull 99); PyTorch sees slightly less once its context is created",
        864, 362.05, 733.0,
        "NVIDIA L40S datasheet (48 GB GDDR6, 864 GB/s; 362 dense BF16 and 733 dense FP8 TFLOPS)"),
    GPU("A100 80GB SXM", 80, 79.25, "PyTorch out-of-memory reports on an A100 80GB: '79.25 GiB total capacity' "
        "(e.g. github.com/levihsu/OOTDiffusion issue 235)",
        2039, 312.0, None,
        "NVIDIA A100 datasheet (80 GB HBM2e, 2,039 GB/s; 312 dense BF16 TFLOPS, no FP8)"),
    GPU("H100 SXM", 80, 79.11, "PyTorch out-of-memory reports on an H100 80GB HBM3: 'a total capacity of 79.11 "
        "GiB' beside nvidia-smi's 81,559 MiB (79.65 GiB) (github.com/vllm-project/vllm issue 27508)",
        3350, 989.4, 1978.9,
        "NVIDIA H100 datasheet (80 GB HBM3, 3.35 TB/s; 989 dense BF16 and 1,979 dense FP8 TFLOPS)"),
    GPU("H200", 141, 139.81, "PyTorch out-of-memory reports on an H200: 'a total capacity of 139.81 GiB' "
        "(seen in several public training logs)",
        4800, 989.4, 1978.9,
        "NVIDIA H200 datasheet (141 GB HBM3e, 4.8 TB/s; 989 dense BF16 and 1,979 dense FP8 TFLOPS)"),
)


def gpu_named(name: str) -> GPU:
    for gpu in GPUS:
        if gpu.name == name:
            return gpu
    raise ValueError(f"Unknown GPU '{name}': choose one of {', '.join(gpu.name for gpu in GPUS)}.")


def gpu_memory_lines(gpus: Sequence[GPU] = GPUS) -> dict[str, int]:
    """One line per memory class, named by its GPUs: {"79.1 GiB: A100 80GB SXM, H100 SXM": bytes}. GPUs sold with
    the same "GB" share a line at the least any of them lets a framework allocate."""
    by_class: dict[float, list[GPU]] = {}
    for gpu in gpus:
        by_class.setdefault(gpu.memory_gb, []).append(gpu)
    lines = {}
    for _, members in sorted(by_class.items()):
        size = min(gpu.memory_gib for gpu in members)
        lines[f"{size:.1f} GiB: {', '.join(gpu.name for gpu in members)}"] = int(size * 2**30)
    return lines
