"""`pvdm serve`: a browser page (Gradio) to sample, extend and continue videos with a model.

`studio` holds the work (a loaded pipeline, one job at a time, progress, cancel, the output
folder) with no web code; `model_card` summarises a model folder; `app` builds the Gradio page
and its two API endpoints, `/sample` and `/continue`. Gradio is an optional extra
(`pip install -e ".[app]"`); nothing here imports it until the app is built.
"""
