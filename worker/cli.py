"""The `feedworker` command. Each subcommand reads the settings once and hands them down."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import click

from tasks.errors import FeedworkerError
from worker.settings import Settings, get_settings


def _settings() -> Settings:
    from worker.logs import setup_logging

    settings = get_settings()
    setup_logging(settings)
    return settings


def _store(settings: Settings) -> Any:
    from tasks.migrate import upgrade
    from tasks.store import Store

    store = Store(settings.store_url)
    upgrade(store)
    return store


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
    from worker.broker import broker_url
    from worker.ingest import ingest as run_ingest

    settings = _settings()
    broker_url(settings)  # fail early, with what to do, when there is no broker
    summary = run_ingest(settings, _store(settings), list(paths), wait, show_progress=sys.stderr.isatty())
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(", ".join(f"{k} {v}" for k, v in summary.items()))


@main.command()
@click.option("--out", type=click.Path(path_type=Path), help="Write to FILE instead of standard output.")
def export(out: Path | None) -> None:
    """Every record in the store, one JSON object a line."""
    store = _store(_settings())
    with (out.open("w", encoding="utf-8") if out else _stdout()) as f:
        for record in store.export():
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


@main.command()
@click.option("--json", "as_json", is_flag=True, help='One {"file", "stage", "reason"} object a line.')
def failures(as_json: bool) -> None:
    """Every drop whose latest outcome is failed: file name, stage, reason."""
    store = _store(_settings())
    for row in store.failed_drops():
        if as_json:
            click.echo(json.dumps({"file": row["name"], "stage": row["stage"], "reason": row["reason"],
                                   "path": row["final_path"] or row["path"]}, ensure_ascii=False))
        else:
            click.echo(f"{row['name']}\t{row['stage']}\t{row['reason']}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--max-age", type=float, default=600.0, show_default=True,
              help="Exit 2 when the oldest waiting drop is older than this many seconds.")
def status(as_json: bool, max_age: float) -> None:
    """Queue depth, workers, backlog, counts by outcome, recent failures."""
    from worker.broker import broker_url, ping
    from worker.celery_app import app
    from worker.status import gather, render

    settings = _settings()
    try:
        broker_ok = ping(broker_url(settings))
    except FeedworkerError:
        broker_ok = False
    data = gather(app, _store(settings), broker_ok)
    data["broker_reachable"] = broker_ok
    if as_json:
        click.echo(json.dumps(data))
    else:
        render(data)
    age = data["oldest_queued_age_seconds"]
    sys.exit(2 if age is not None and age > max_age else 0)


@main.command()
def replay() -> None:
    """Re-enqueue failed drops (after a fix or a config change)."""
    from worker.broker import broker_url
    from worker.celery_app import app
    from worker.enqueue import Enqueuer

    settings = _settings()
    broker_url(settings)
    store = _store(settings)
    rows = store.failed_drops()
    enq = Enqueuer(app, store, settings.parse, run_id="replay", origin="replay", scope="replay")
    n = enq.resend(rows)
    click.echo(f"re-enqueued {n} failed drops")


@main.command()
@click.argument("drop_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--flower", is_flag=True, help="Also run Flower (http://127.0.0.1:5555).")
@click.option("--concurrency", "-c", type=int, default=None, help="Worker processes (default: CPU count).")
def run(drop_dir: Path, flower: bool, concurrency: int | None) -> None:
    """The main job: watcher + worker pool (+ Flower), supervised. Ctrl-C / SIGTERM stops cleanly."""
    from worker.supervisor import run_main

    sys.exit(run_main(_settings(), drop_dir, flower=flower, concurrency=concurrency))


@main.command()
@click.argument("drop_dir", type=click.Path(file_okay=False, path_type=Path))
def watch(drop_dir: Path) -> None:
    """The watcher alone: enqueue drops from DROP_DIR (workers run elsewhere)."""
    from worker.watcher import watch_main

    sys.exit(watch_main(_settings(), drop_dir))


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def worker(ctx: click.Context) -> None:
    """A Celery worker: the same as `celery -A worker worker` (extra options are passed on)."""
    os.execvp("celery", ["celery", "-A", "worker", "worker", *ctx.args])  # noqa: S606


def _stdout() -> TextIO:
    class _Keep:  # a context manager that doesn't close stdout
        def __enter__(self) -> TextIO:
            return sys.stdout

        def __exit__(self, *_: object) -> None:
            sys.stdout.flush()

    return _Keep()  # type: ignore[return-value]


def entry() -> None:
    try:
        main(standalone_mode=True)
    except FeedworkerError as exc:
        click.echo(f"feedworker: {exc}", err=True)
        sys.exit(1)
