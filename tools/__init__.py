"""The project's own tools, run from a clone with ``python -m tools.NAME`` (nothing outside the repository):

- ``tools.corpus``: a seeded drop corpus with its answers, and the check of an export against them;
- ``tools.imagehost``: a loopback image host with every way an image URL can go wrong, and far-host latency;
- ``tools.yamldiff``: the offline differential check of the YAML fast path against libyaml.
"""
