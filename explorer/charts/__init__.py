"""Pure functions from arrays and labels to plotly figures; no models, no streamlit."""
