"""The `feedworker` command. Each subcommand reads the settings once and hands them down."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import click

from worker.settings import Settings, get_settings


def _settings() -> Settings:
    from worker.observing.logs import setup_logging

    settings = get_settings()
    setup_logging(settings)
    return settings


def _store(settings: Settings) -> Any:
    from tasks.store.ledger import Store
    from tasks.store.migrate import upgrade

    store = Store(settings.store_url)
    upgrade(store)
    return store


def _reader(settings: Settings) -> Any:
    """The store as it is, for a command that only reads: never created, never migrated (worker/preflight.py)."""
    from worker.preflight import open_for_reading

    return open_for_reading(settings.store_url)


@click.group()
def main() -> None:
    """feedworker: drop files in, get verified, linked records out."""


@main.command()
def migrate() -> None:
    """Bring the store's schema to the newest revision."""
    _store(_settings())
    click.echo("store schema is current")


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--wait", is_flag=True, help="Return when every enqueued file is finished.")
@click.option("--json", "as_json", is_flag=True, help='Print {"published": n, "unchanged": n, "failed": n}.')
def ingest(paths: tuple[Path, ...], wait: bool, as_json: bool) -> None:
    """Enqueue files or folders once (backfill)."""
    from worker.celeryapp.celery_app import app
    from worker.running.ingest import ingest as run_ingest
    from worker.settings import broker_url

    settings = _settings()
    broker_url(settings)  # fail early, with what to do, when there is no broker
    summary = run_ingest(app, settings, _store(settings), list(paths), wait, show_progress=sys.stderr.isatty())
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(", ".join(f"{k} {v}" for k, v in summary.items()))


@main.command()
@click.option("--out", type=click.Path(path_type=Path), help="Write to FILE instead of standard output.")
def export(out: Path | None) -> None:
    """Every record in the store, one JSON object a line."""
    store = _reader(_settings())
    with (out.open("w", encoding="utf-8") if out else _stdout()) as f:
        for record in store.export():
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


@main.command()
@click.option("--json", "as_json", is_flag=True, help='One {"file", "stage", "reason"} object a line.')
def failures(as_json: bool) -> None:
    """Every drop whose latest outcome is failed: file name, stage, reason."""
    from tasks.names import display

    store = _reader(_settings())
    for row in store.failed_drops():
        # Names and paths are the ledger's escaped form; display() escapes whatever else could reach a terminal.
        shown = {k: None if v is None else display(str(v)) for k, v in (
            ("file", row["name"]), ("stage", row["stage"]), ("reason", row["reason"]),
            ("path", row["final_path"] or row["path"]))}
        if as_json:
            click.echo(json.dumps(shown, ensure_ascii=False))
        else:
            click.echo(f"{shown['file']}\t{shown['stage']}\t{shown['reason']}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--max-age", type=float, default=600.0, show_default=True,
              help="Exit 2 when the oldest waiting drop is older than this many seconds.")
def status(as_json: bool, max_age: float) -> None:
    """Queues, workers, backlog and its oldest drop, outcomes (last hour/day), the five latest failures.

    Exit code: 0 healthy, 2 the oldest waiting drop is older than --max-age, 1 the store or broker is unreachable.
    """
    from tasks.store.ledger import Store
    from worker.celeryapp.celery_app import app
    from worker.observing.status import exit_code, gather, render

    settings = _settings()
    store = Store(settings.store_url)  # read only: status never migrates (a wrong folder must not get a store)
    try:
        data = gather(settings, app, store)
        behind = _schema_behind(store) if data.get("store_reachable") else None
    finally:
        store.dispose()
    if as_json:
        click.echo(json.dumps(data))
    else:
        render(data, max_age)
    if behind:
        click.echo(f"feedworker: {behind}", err=True)
    sys.exit(1 if behind else exit_code(data, max_age))


def _schema_behind(store: Any) -> str | None:
    from worker.preflight import schema_behind

    return schema_behind(store)


@main.group()
def health() -> None:
    """Probes for compose / Kubernetes: exit 0 healthy, 1 not (--json for the details)."""


@health.command()
@click.option("--worker", "worker_name", metavar="NAME",
              help="Also ping this Celery worker (its node name, e.g. celery@$HOSTNAME) through the broker.")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as one JSON object.")
def live(worker_name: str | None, as_json: bool) -> None:
    """Liveness: the broker answers (and the named worker answers a ping)."""
    from worker.celeryapp.celery_app import app
    from worker.observing.health import liveness

    _report(liveness(_settings(), app, worker_name), as_json)


@health.command()
@click.option("--json", "as_json", is_flag=True, help="Print the checks as one JSON object.")
def ready(as_json: bool) -> None:
    """Readiness: the store answers and its schema is current."""
    from tasks.store.ledger import Store
    from worker.observing.health import readiness

    store = Store(_settings().store_url)
    try:
        checks = readiness(store)
    finally:
        store.dispose()
    _report(checks, as_json)


def _report(checks: Any, as_json: bool) -> None:
    from worker.observing.health import as_json as checks_json
    from worker.observing.health import as_text, healthy

    click.echo(checks_json(checks) if as_json else as_text(checks))
    sys.exit(0 if healthy(checks) else 1)


@main.command()
def replay() -> None:
    """Re-enqueue failed drops (after a fix or a config change)."""
    from worker.celeryapp.celery_app import app
    from worker.settings import broker_url
    from worker.watching.enqueue import Enqueuer

    settings = _settings()
    broker_url(settings)
    store = _store(settings)
    rows = store.failed_drops()
    enq = Enqueuer(app, store, settings.parse, run_id="replay", origin="replay", scope="replay",
                   batch_max=settings.watch.batch_max)
    n = enq.resend(rows)
    click.echo(f"re-enqueued {n} failed drops")


@main.command()
@click.argument("name_or_path")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def trace(name_or_path: str, as_json: bool) -> None:
    """What happened to a file: discovered, queued, each delivery (and split), outcome, record, where it went."""
    from worker.observing.trace import render
    from worker.observing.trace import trace as lineage

    store = _reader(_settings())
    try:
        data = lineage(store, name_or_path)
    finally:
        store.dispose()
    click.echo(json.dumps(data, ensure_ascii=False) if as_json else "\n".join(render(data)))
    sys.exit(0 if data["drops"] else 1)


@main.command()
@click.argument("drop_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--flower", is_flag=True, help="Also run Flower (http://127.0.0.1:5555).")
@click.option("--concurrency", "-c", type=int, default=None, help="Worker processes (default: CPU count).")
def run(drop_dir: Path, flower: bool, concurrency: int | None) -> None:
    """The main job: watcher + worker pool (+ Flower), supervised. Ctrl-C / SIGTERM stops cleanly."""
    from worker.preflight import drop_folder
    from worker.running.supervisor import run_main

    settings = _settings()
    drop_folder(drop_dir, create=False)  # a typo in a parent folder is refused before anything is made
    _store(settings).dispose()  # an unreachable store is one clear line, before any process starts
    drop_folder(drop_dir)  # only its last component is created
    sys.exit(run_main(settings, drop_dir, flower=flower, concurrency=concurrency))


@main.command()
@click.argument("drop_dir", type=click.Path(file_okay=False, path_type=Path))
def watch(drop_dir: Path) -> None:
    """The watcher alone: enqueue drops from DROP_DIR (workers run elsewhere)."""
    from worker.running.watch import watch_main

    sys.exit(watch_main(_settings(), drop_dir))


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def worker(ctx: click.Context) -> None:
    """A Celery worker: the same as `celery -A worker worker` (extra options are passed on)."""
    _settings()  # a bad setting is one clear line here, not a traceback from inside Celery's app loading
    os.execvp("celery", ["celery", "-A", "worker", "worker", *ctx.args])  # noqa: S606


@main.command()
@click.option("--since", metavar="CURSOR", help='The "cursor" of the last change seen (default: from the start).')
@click.option("--follow", is_flag=True, help="Keep waiting for new changes.")
@click.option("--limit", type=click.IntRange(min=1), help="Stop after N changes.")
def changes(since: str | None, follow: bool, limit: int | None) -> None:
    """Every record change after CURSOR, oldest first, one JSON object a line (exit 2: a bad cursor)."""
    from worker.observing.changefeed import run_changes

    store = _store(_settings())
    try:
        code = run_changes(store, since, follow, limit, sys.stdout)
    finally:
        store.dispose()
    sys.exit(code)


def _stdout() -> TextIO:
    class _Keep:  # a context manager that doesn't close stdout
        def __enter__(self) -> TextIO:
            return sys.stdout

        def __exit__(self, *_: object) -> None:
            sys.stdout.flush()

    return _Keep()  # type: ignore[return-value]


def entry() -> None:
    from worker.clierrors import run_guarded

    run_guarded(lambda: main(standalone_mode=True))
