"""Chart-and-export layout: a chart with its downloads beneath it, explanations beside it, token chips."""

from __future__ import annotations

import html
from functools import partial

import streamlit as st

from explorer import export
from explorer.explain import explanation


def token_strip(tokens: list[str]) -> None:
    """The tokens as the model sees them, numbered, as escaped HTML chips."""
    chips = "".join(
        f'<span style="display:inline-block;margin:2px;padding:2px 6px;border-radius:4px;'
        f'background:#eef2ff;font-family:monospace"><sub style="color:#6b7280">{i}</sub> {html.escape(t)}</span>'
        for i, t in enumerate(tokens)
    )
    st.markdown(f"<div>{chips}</div>", unsafe_allow_html=True)


def chart(figure, key: str, numbers: export.LabelledArray | export.Table | None = None, on_select=None) -> None:
    """A plotly chart with its exports beneath it: PNG (the chart's camera button in the browser, and a 2x render
    on the server where Chromium is installed), SVG and PDF for papers (rendered on the server, at a page's width),
    and `numbers`, the numbers behind it, as CSV and JSON.
    `on_select`: a callback run when a point of the chart is clicked (its selection is in session state at `key`).

    Every file is made only when its button is clicked (a server-side PNG takes a few seconds), never on a rerun.
    """
    title = figure.layout.title.text or ""
    name = export.file_stem(title, key)
    st.plotly_chart(
        figure,
        key=key,
        config={"displaylogo": False, "toImageButtonOptions": {"format": "png", "filename": name, "scale": 2}},
        **({"on_select": on_select, "selection_mode": "points"} if on_select else {}),
    )
    loader = st.session_state.pop("chart_library_loader", None)  # the empty chart app.py drew for the browser to
    if loader is not None:  # load its charting library early: a real chart is here now
        loader.empty()
    files = {}
    if export.png_export_available():
        files["png"] = (partial(export.figure_png, figure), "image/png", "A 2x PNG rendered on the server for papers "
                        "and slides (a few seconds). The camera button on the chart saves what you see.")
        for extension in export.VECTOR_MIME:
            about = (f"{extension.upper()} at the width of a paper's page (7 in), fonts embedded, the same labels "
                     "as on screen, rendered on the server (a few seconds).")
            files[extension] = (partial(export.figure_vector, figure, extension), export.VECTOR_MIME[extension], about)
    if numbers is not None:
        files["csv"] = (numbers.csv, "text/csv", "The numbers behind the chart, with their labels, for a spreadsheet.")
        files["json"] = (numbers.json, "application/json", "The numbers behind the chart, with their labels and "
                         "what the view was, for code.")
    if not files:
        return
    row = st.container(horizontal=True, gap="small", key=f"exports-{key}")
    for extension, (make, mime, about) in files.items():
        row.download_button(extension.upper(), make, file_name=f"{name}.{extension}", mime=mime, help=about,
                            key=f"{extension}-{key}", on_click="ignore", type="tertiary",
                            icon=":material/download:")


def downloads(name: str, files: dict[str, str]) -> None:
    """Download buttons in a row, one per format: {"csv": text, "json": text}."""
    mime = {"csv": "text/csv", "json": "application/json"}
    for column, (extension, data) in zip(st.columns(len(files) + 3), files.items()):
        column.download_button(
            f"⬇ {extension.upper()}", data, file_name=f"{name}.{extension}", mime=mime[extension], key=f"dl-{name}-{extension}"
        )


def explain(name: str) -> None:
    """The plain-words explanation `name`, in a bordered box (put it in the column beside its chart)."""
    st.container(border=True).markdown(explanation(name))


def beside(name: str, widths: tuple[int, int] = (2, 1)):
    """Two columns: returns the wide one for a chart, writes explanation `name` in the narrow one."""
    chart_column, text_column = st.columns(widths)
    with text_column:
        explain(name)
    return chart_column
