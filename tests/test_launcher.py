"""The launcher (`python -m explorer app`, what `make app` runs): it serves the app, and the model and the run it
preloads before the first visitor are the very ones the attention page then uses: loaded once per process."""

import pytest
from streamlit.testing.v1 import AppTest

from explorer import preload
from explorer.run import MAX_TOKENS
from explorer.state import DEFAULT_TEXT
from explorer.ui import models
from tests.browser import ARTIFACTS, launch, streamlit_server, wait_idle
from tests.specs import figures


def test_the_page_uses_the_preloaded_model_and_run():
    models._cached_model.clear()  # earlier tests of this process may have loaded their own copy
    models._cached_overview.clear()
    preload.start(("explorer.ui",))  # as the launcher does, in this process (a second start does nothing)
    ready = preload.wait()
    assert ready.skipped is None, ready.skipped
    app = AppTest.from_file("../app.py", default_timeout=300)
    app.run()
    assert not app.exception, app.exception
    assert "Layer 0: all 9 heads" in figures(app)
    assert models._cached_model("smollm2") is preload.model("smollm2")
    assert models._cached_overview("smollm2", DEFAULT_TEXT, MAX_TOKENS) is preload.overview("smollm2", DEFAULT_TEXT,
                                                                                            MAX_TOKENS)


@pytest.mark.browser
def test_the_launcher_serves_the_app_and_loads_the_model_once():
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    with streamlit_server(launcher=True) as url, sync_playwright() as playwright:
        browser = launch(playwright)
        page = browser.new_page(viewport={"width": 1280, "height": 1600})
        page.goto(url)
        page.locator('[data-testid="stPlotlyChart"] g.heatmaplayer image').first.wait_for(timeout=300_000)
        wait_idle(page, 300_000)
        assert page.get_by_text("Layer 0: all 9 heads").count()
        browser.close()
        log = (ARTIFACTS / f"server-{url.rsplit(':', 1)[1]}.log").read_text()
    assert "Preload: smollm2 loaded and run" in log
    assert log.count("Loading weights: 100%") == 1, log  # transformers reports each load: the page loaded none
