"""Committed uptraining runs in the lab: every device's runs side by side, labelled with device, dtype and date."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from explorer import export
from explorer.committed import DEFAULT_RESULTS, results_dir, uptrain_rows


def committed_uptraining(folder: Path | str | None = None) -> None:
    """A table of the uptraining runs in the results folder (CPU runs beside GPU runs, once committed)."""
    rows = uptrain_rows(folder)
    if not rows:
        return
    devices = sorted({row["device"] for row in rows})
    with st.expander(f"Measured uptraining runs ({len(rows)}, on {' and '.join(devices)})"):
        st.dataframe(pd.DataFrame(rows), hide_index=True, column_config={
            "run": "Run",
            "variant": "Variant",
            "device": "Device",
            "dtype": "Precision",
            "date": "Date",
            "training_tokens": st.column_config.NumberColumn("Training tokens", format="%d"),
            "eval_tokens": st.column_config.NumberColumn("Eval tokens", format="%d"),
            "original": st.column_config.NumberColumn("Original", format="%.1f"),
            "before": st.column_config.NumberColumn("Converted", format="%.1f"),
            "after": st.column_config.NumberColumn("Converted + uptraining", format="%.1f"),
            "control": st.column_config.NumberColumn("Control", format="%.1f"),
            "after_vs_control": st.column_config.NumberColumn("÷ control", format="%.2f×"),
        })
        where = Path(folder or results_dir())
        shown = "bench/results" if where == DEFAULT_RESULTS else str(where)
        st.caption(f"Perplexities on held-out prose, read from `{shown}/uptrain-*.json` "
                   "(`python -m explorer uptrain --output ...` on a CPU, `python -m bench.gpu` on a GPU).")
        st.download_button("⬇ CSV", export.table_csv(rows), file_name="uptraining-runs.csv", mime="text/csv",
                           key="dl-uptraining-runs-csv")
