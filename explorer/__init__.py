"""Attention Explorer: run text through small real language models and look at their attention.

Data flows one way: text -> tokens -> model (+ variant) -> run -> numbers -> figures -> page.
Nothing in this package imports streamlit except `explorer.ui`.

From Python and notebooks, use `explorer.api` (`from explorer import api`): it is the stable, documented way in.
It is not imported here, so that the command line and the app import only what they use.
"""
