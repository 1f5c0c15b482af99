"""`app`: the Streamlit app, from wherever the package is installed, with the default model loaded (and the default
text run) in the background while the server starts, so that the first visitor does not wait for them."""

from __future__ import annotations


def add(commands) -> None:
    app = commands.add_parser("app", help="start the Streamlit app; other options go to `streamlit run` "
                              "(e.g. --server.port=8502)")
    app.add_argument("--no-preload", action="store_true",
                     help="load models on first use only, as `streamlit run app.py` does (saves memory on a server "
                     "whose visitors use other models)")
    app.set_defaults(handler=run_app)


# What the attention page (the first page a visitor sees) imports, in the order it needs them: imported by the
# preload thread while Streamlit starts, so that the page's first run finds them in `sys.modules`.
PRELOAD_MODULES = (
    "pandas",  # first: the app's first chart waits until it is whole (see app.py)
    "plotly.graph_objects",
    "torch",
    "transformers",
    "explorer.ui",
    "explorer.charts.attention",
    "explorer.charts.flow",
    "explorer.selection",
    "networkx",  # the page's attention flow (explorer.rollout imports it on first use)
)


def run_app(args) -> int:
    """Run the app with `streamlit run`, wherever the package is installed, with the app's own Streamlit settings
    (.streamlit/config.toml, which Streamlit itself reads only from the current folder) given as options.

    Streamlit runs in this process (as its own `streamlit` command does), so stopping this process stops it; the
    preload (`explorer.preload`) runs in a thread of the same process, where the page's caches find its results."""
    import tomllib

    from streamlit.web import cli

    from explorer import preload
    from explorer.paths import APP_FILE, STREAMLIT_CONFIG

    if not args.no_preload:
        preload.start(PRELOAD_MODULES)

    settings = tomllib.loads(STREAMLIT_CONFIG.read_text()) if STREAMLIT_CONFIG.is_file() else {}
    options = [f"--{section}.{name}={_toml_option(value)}"
               for section, values in settings.items() for name, value in values.items()]
    try:
        cli.main(args=["run", str(APP_FILE), *options, *args.streamlit_options], prog_name="streamlit")
    except SystemExit as finished:  # click ends every command this way
        return finished.code if isinstance(finished.code, int) else 0
    return 0


def _toml_option(value) -> str:
    """A settings value as `streamlit run` reads it on its command line (true/false in lower case)."""
    return str(value).lower() if isinstance(value, bool) else str(value)
