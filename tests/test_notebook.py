"""docs/notebook.ipynb runs from top to bottom in a headless kernel, so the walk-through never rots."""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
PLOTLY = "application/vnd.plotly.v1+json"


@pytest.mark.slow
def test_the_notebook_runs_and_draws_its_figures_inline():
    notebook = nbformat.read(ROOT / "docs" / "notebook.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    figures = [output["data"][PLOTLY] for output in outputs if PLOTLY in output.get("data", {})]
    titles = [figure["layout"].get("title", {}).get("text", "") for figure in figures]
    assert "Layer 3, head 7" in titles and "MQA: layer 3, head 7" in titles  # inline plotly figures
    assert any(title.startswith("meta-llama/Meta-Llama-3-8B") for title in titles)  # the KV chart
    tables = "".join(output["data"].get("text/plain", "") for output in outputs if "data" in output)
    assert "MQA, mean-pooled" in tables and "MLA, latent 192" in tables  # the quality table
    assert "['head.pdf', 'kv-cache.svg']" in tables  # figures saved for a paper
