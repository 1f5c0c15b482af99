"""The attention page in a real browser: clicking a head selects it, and every token label can be seen."""

import json
import time

import pytest
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

from tests.browser import ARTIFACTS, launch, record_frames, streamlit_server, wait_idle

pytestmark = pytest.mark.browser
sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright

TOKENS = ["The", "giant", "ate", "the", "apple", "because", "it", "was", "hungry"]
HEATMAP = '[data-testid="stPlotlyChart"] g.heatmaplayer image'
FIRST_RUN = []  # what the server sent the page on its first run, in order


@pytest.fixture(scope="module")
def page():
    with streamlit_server() as url, sync_playwright() as playwright:
        browser = launch(playwright)
        page = browser.new_page(viewport={"width": 1280, "height": 4200})
        frames = record_frames(page)
        page.goto(url)
        wait_idle(page, 180_000)
        page.get_by_text("All heads × layers").first.wait_for(timeout=180_000)
        FIRST_RUN.extend(ForwardMsg.FromString(data) for _, sent, data in frames if not sent)
        yield page
        browser.close()


def chart(page, title: str):
    """The plotly chart whose title starts with `title`."""
    return page.locator('[data-testid="stPlotlyChart"]').filter(
        has=page.locator("g.g-gtitle text", has_text=title)).first


def click_tile(page, title: str, column: int, row: int, columns: int, rows: int, cells: int) -> None:
    """Click the centre of tile (column, row) of a mosaic of `cells`-wide tiles separated by one empty cell."""
    image = chart(page, title).locator("g.heatmaplayer image")
    image.scroll_into_view_if_needed()
    box = image.bounding_box()
    width, height = columns * (cells + 1) - 1, rows * (cells + 1) - 1  # the canvas, in cells
    x = box["x"] + box["width"] * (column * (cells + 1) + cells / 2) / width
    y = box["y"] + box["height"] * (row * (cells + 1) + cells / 2) / height
    page.mouse.move(x, y)
    page.wait_for_timeout(300)  # let plotly find the point under the mouse before the click
    page.mouse.click(x, y)


def wait_for_title(page, text: str, timeout_s: float = 120) -> bool:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if text in page.locator('[data-testid="stPlotlyChart"] g.g-gtitle text').all_text_contents():
            return True
        page.wait_for_timeout(250)
    return False


def test_every_token_label_is_visible_on_every_axis(page):
    """Plotly hides a label that would overflow its figure: check what a person can see, on both token charts."""
    for title in ("Layer 0, head 0", "Mask: causal"):
        for axis in ("xtick", "ytick"):
            labels = chart(page, title).locator(f"g.{axis} text")
            visible = [labels.nth(i).text_content() for i in range(labels.count()) if labels.nth(i).is_visible()]
            assert visible == TOKENS, (title, axis, visible)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "attention-1280.png", full_page=True)


def test_the_browser_meets_a_chart_before_the_model_runs_and_it_is_gone_after(page):
    """The first run sends an empty chart before the page starts (so the browser loads plotly.js while the model
    loads and runs) and removes it once the page has run."""
    elements = [message.delta.new_element for message in FIRST_RUN
                if message.WhichOneof("type") == "delta" and message.delta.WhichOneof("type") == "new_element"]
    kinds = [element.WhichOneof("type") for element in elements]
    title = next(i for i, element in enumerate(elements)
                 if kinds[i] == "heading" and element.heading.body == "Where does the model look?")
    first_chart = kinds.index("plotly_chart")
    assert first_chart < title  # before the page's first line, so before its model
    assert json.loads(elements[first_chart].plotly_chart.spec)["data"][0]["x"] == []  # the empty one
    assert "empty" in kinds[first_chart + 1:]  # replaced once the page has run
    assert page.locator('[data-testid="stSidebar"] [data-testid="stPlotlyChart"]').count() == 0


def test_clicking_a_head_in_the_grid_selects_it(page):
    click_tile(page, "Layer 0: all 9 heads", column=4, row=0, columns=6, rows=2, cells=9)
    assert wait_for_title(page, "Layer 0, head 4")
    wait_idle(page)
    assert "head=4" in page.url


def test_clicking_a_tile_of_the_overview_selects_its_layer_and_head(page):
    click_tile(page, "All heads × layers", column=5, row=7, columns=30, rows=9, cells=9)
    selected = wait_for_title(page, "Layer 5, head 7")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "attention-overview-click.png", full_page=True)
    assert selected
    wait_idle(page)
    assert "layer=5" in page.url and "head=7" in page.url
