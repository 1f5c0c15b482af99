"""`app`: the Streamlit app, from wherever the package is installed."""

from __future__ import annotations


def add(commands) -> None:
    app = commands.add_parser("app", help="start the Streamlit app; other options go to `streamlit run` "
                              "(e.g. --server.port=8502)")
    app.set_defaults(handler=run_app)


def run_app(args) -> int:
    """Run the app with `streamlit run`, wherever the package is installed, with the app's own Streamlit settings
    (.streamlit/config.toml, which Streamlit itself reads only from the current folder) given as options.

    Streamlit runs in this process (as its own `streamlit` command does), so stopping this process stops it."""
    import tomllib

    from streamlit.web import cli

    from explorer.paths import APP_FILE, STREAMLIT_CONFIG

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
