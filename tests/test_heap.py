"""A Celery worker's start-up heap is frozen before its pool forks (worker/celeryapp/heap.py): the full
collections of the main process and of every pool child walk only what was made since."""

from __future__ import annotations

from pathlib import Path

from tests.processes import celery_worker, env_for, wait_for


def test_a_workers_start_up_heap_is_frozen_in_its_main_process_and_pool_children(
        tmp_path: Path, redis_url: str) -> None:
    notes = tmp_path / "heap.txt"
    env = env_for(redis_url, f"sqlite:///{tmp_path / 'fw.db'}", FEEDWORKER_TEST_HEAP_FILE=str(notes))
    with celery_worker(env, tmp_path, "heap", concurrency=2, app="tests.heap_app"):
        lines = wait_for(lambda: notes.exists() and len(notes.read_text().splitlines()) >= 3 and
                         notes.read_text().splitlines(), 60)
    seen = [(role, int(frozen), int(unfrozen)) for role, _pid, frozen, unfrozen in (ln.split() for ln in lines)]
    assert sorted(role for role, _, _ in seen) == ["child", "child", "main"], seen
    for role, frozen, unfrozen in seen:
        # Celery, kombu, SQLAlchemy, pydantic, aiohttp: ~100,000 objects, made before the fork and frozen;
        # what the worker made since (its consumer, pool, connections) is far less
        assert frozen > 50_000 and unfrozen < frozen / 2, (role, frozen, unfrozen)
