"""Where the app's own files lie: the repository root in a checkout, or the copy that a wheel installs inside
the package, so that `attention-explorer app` runs wherever the package is installed.

A wheel built from pyproject.toml puts `app.py`, `views/`, `assets/`, the committed `bench/results/` and `.streamlit/config.toml` under
`explorer/_app/`; in a checkout they stay at the root, where `streamlit run app.py` and `make app` find them.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent  # explorer/
_INSTALLED_ROOT = PACKAGE_DIR / "_app"  # only in an installed wheel
APP_ROOT = _INSTALLED_ROOT if (_INSTALLED_ROOT / "app.py").is_file() else PACKAGE_DIR.parent
APP_FILE = APP_ROOT / "app.py"  # the Streamlit entry point
ASSETS_DIR = APP_ROOT / "assets"  # reference configs and explanations
RESULTS_DIR = APP_ROOT / "bench" / "results"  # committed benchmark results that pages read
STREAMLIT_CONFIG = APP_ROOT / ".streamlit" / "config.toml"  # the app's Streamlit settings
