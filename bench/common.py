"""What every benchmark script shares: the environment it ran in, and printing and saving its figures."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path


def environment() -> dict[str, object]:
    """Device, library versions, threads and date, so a figure can be read against where it came from."""
    import streamlit
    import torch
    import transformers

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({platform.processor() or platform.machine()})"
    return {
        "device": device,
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "streamlit": streamlit.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }


def report(figures: dict, json_path: Path | None) -> None:
    """Print the figures (with the environment) as JSON, and write them to `json_path` when given."""
    text = json.dumps({**figures, "environment": environment()}, indent=2)
    print(text)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(text + "\n")
