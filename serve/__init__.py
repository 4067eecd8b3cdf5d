"""Serve an export to many users at once over HTTP: `estella serve EXPORT_DIR`.

engine.py batches every running request into one step per tick (continuous batching, no HTTP;
stream.py: one request inside it and the deltas it hands its reader; engine_process.py: the same
engine in a child process, what the server runs by default);
api.py is the OpenAI-style HTTP interface on top of it (schema.py: the request bodies; limits.py:
the bounds on one request; chat.py: the chat template; replies.py: the answers, whole or streamed;
errors.py: the error shape); server.py runs it under uvicorn (cpus.py: --engine-cpus, where each
side runs), cli.py holds its flags.
"""
