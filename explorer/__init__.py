"""Attention Explorer: run text through small real language models and look at their attention.

Data flows one way: text -> tokens -> model (+ variant) -> run -> numbers -> figures -> page.
Nothing in this package imports streamlit except `explorer.ui`.
"""
