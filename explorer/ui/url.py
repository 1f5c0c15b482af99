"""The view state and the URL: read once from a link, kept by the widgets, mirrored back into the address."""

from __future__ import annotations

import urllib.parse
from dataclasses import replace

import streamlit as st

from explorer.state import (
    ViewState,
    parse_query,
    to_query,
)


def view_state() -> ViewState:
    """This run's view state: read from the URL on a session's first run, then kept by the widgets."""
    if "view" not in st.session_state:
        state, notices = parse_query(st.query_params.to_dict())
        st.session_state["view"] = state
        st.session_state["notices"] = notices
    return st.session_state["view"]


def set_view(**changes) -> ViewState:
    """Update the view state and mirror it in the URL, so a copied link restores this view."""
    state = replace(view_state(), **changes)
    st.session_state["view"] = state
    query = to_query(state)
    for name in set(st.query_params) - set(query):
        del st.query_params[name]
    for name, value in query.items():
        if st.query_params.get(name) != value:
            st.query_params[name] = value
    return state


def show_notices(extra: list[str] = ()) -> None:
    """Notices about corrected link parameters, shown once."""
    for notice in [*st.session_state.pop("notices", []), *extra]:
        st.warning(notice)


def keep_widget(key: str, value) -> None:
    """Give a keyed widget its value from the view on first use, and keep it across page switches.

    Re-assigning a widget's own value marks it as set by the app, which Streamlit keeps when the user moves to
    another page and back; without it the widget would return to its default.
    """
    st.session_state[key] = st.session_state.get(key, value)


def share_link_slot():
    """A place at the foot of the sidebar for `share_link`: a fragment can redraw the link there when it changes
    the view without rerunning the page."""
    return st.sidebar.empty()


def share_link(slot=None) -> None:
    """The link that reopens this exact view, with a copy button, at the foot of the sidebar (or in `slot`, from
    `share_link_slot`, which it replaces)."""
    base = (st.context.url or "").split("?")[0]
    query = urllib.parse.urlencode(to_query(view_state()))
    with slot.container() if slot is not None else st.sidebar:
        st.caption("Share this view: copy the link")
        st.code(f"{base}?{query}" if query else base, language=None, wrap_lines=True)
