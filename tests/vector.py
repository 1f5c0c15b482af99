"""Checks that an exported SVG or PDF is what a paper needs: a real file, its labels as text, one page, fonts in."""

from __future__ import annotations

import io
from xml.etree import ElementTree

SVG = "{http://www.w3.org/2000/svg}"


def svg_texts(data: bytes) -> list[str]:
    """The SVG parsed as XML (a parse error fails the test): the text of every <text> element, in order."""
    root = ElementTree.fromstring(data)
    assert root.tag == f"{SVG}svg"
    return ["".join(element.itertext()) for element in root.iter(f"{SVG}text")]


def row_labels_fit(data: bytes) -> bool:
    """Whether every row label (a y-axis tick, drawn right-aligned to the left of the plot) has room to its left:
    a label ending at x has its start at about x - 6 px per character, which must not fall off the canvas."""
    root = ElementTree.fromstring(data)
    ticks = [text for group in root.iter(f"{SVG}g") if group.get("class") == "ytick" for text in group.iter(f"{SVG}text")]
    assert ticks, "no row labels in the SVG"
    return all(float(text.get("x")) >= 5 * len("".join(text.itertext())) for text in ticks)


def pdf_pages_and_fonts(data: bytes) -> tuple[int, str, list[str]]:
    """(pages, the first page's text, the fonts of the first page that are embedded in the file)."""
    from pypdf import PdfReader

    assert data.startswith(b"%PDF-")
    reader = PdfReader(io.BytesIO(data))
    page = reader.pages[0]
    embedded = []
    for font in page["/Resources"]["/Font"].values():
        font = font.get_object()
        descriptor = font.get("/FontDescriptor") or font["/DescendantFonts"][0].get_object()["/FontDescriptor"]
        if any(key in descriptor.get_object() for key in ("/FontFile", "/FontFile2", "/FontFile3")):
            embedded.append(str(font["/BaseFont"]))
    return len(reader.pages), page.extract_text(), embedded
