"""Serve an export to many users at once over HTTP: `estella serve EXPORT_DIR`.

engine.py batches every running request into one step per tick (continuous batching, no HTTP);
api.py is the OpenAI-style HTTP interface on top of it; cli.py runs it under uvicorn.
"""
