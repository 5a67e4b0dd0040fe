"""The Streamlit pages and panels of Schedule Playground (the library is :mod:`playground`)."""
