"""Running the pieces: the supervisor behind `feedworker run`, the embedded broker, child processes bound to their
parent, one-shot `ingest`, and the per-process resources (store, image checker).
"""
