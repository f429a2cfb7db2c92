"""Operator mistakes end in one clear line and a non-zero exit, never a traceback; read-only commands never
migrate. Every case runs the real `feedworker` command as a subprocess, as an operator would."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from pathlib import Path

import psycopg
import pytest

from tasks.store.migrate import head_revision
from tests.conftest import fresh_pg_database
from tests.processes import BIN, feedworker

COMMANDS = [("migrate",), ("export",), ("failures",), ("status",), ("replay",), ("ingest", "."),
            ("run", "drops"), ("watch", "."), ("health", "ready")]


BROKER: list[str] = []  # this session's own Redis database (set by the fixture below)


@pytest.fixture(autouse=True)
def _broker(redis_url: str) -> None:
    BROKER[:] = [redis_url]


def env(**more: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FEEDWORKER_", "FLOWER_"))}
    return {**base, "PATH": f"{BIN}:{base.get('PATH', '')}", "FEEDWORKER_BROKER_URL": BROKER[0], **more}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens here once the socket is closed


def one_line_failure(tmp_path: Path, e: dict[str, str], *args: str) -> str:
    res = feedworker(e, *args, check=False, cwd=tmp_path, timeout=60)
    assert res.returncode != 0, res.stdout
    assert "Traceback" not in res.stderr, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.startswith("feedworker: ")]
    assert len(lines) == 1, res.stderr
    return lines[0]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0] if a[0] != "health" else "health-ready")
def test_a_bad_setting_names_the_setting_and_the_allowed_values(tmp_path: Path, args: tuple[str, ...]) -> None:
    line = one_line_failure(tmp_path, env(FEEDWORKER_WATCH__AFTER="explode"), *args)
    assert "watch.after" in line and "FEEDWORKER_WATCH__AFTER" in line and "'explode'" in line
    assert "'move', 'keep' or 'delete'" in line


@pytest.mark.parametrize("args", [("migrate",), ("export",), ("run", "drops"), ("worker",)], ids=lambda a: a[0])
def test_a_broken_config_file_names_file_line_and_problem(tmp_path: Path, args: tuple[str, ...]) -> None:
    (tmp_path / "fw.yaml").write_text("watch:\n  after: [unclosed\n", encoding="utf-8")
    line = one_line_failure(tmp_path, env(FEEDWORKER_CONFIG="fw.yaml"), *args)
    assert "fw.yaml" in line and "line 3, column 1" in line and "not valid YAML" in line
    assert "from line 2" in line


def test_an_unknown_key_in_the_config_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "fw.yaml").write_text("store_ulr: sqlite:///x.db\n", encoding="utf-8")
    line = one_line_failure(tmp_path, env(FEEDWORKER_CONFIG="fw.yaml"), "migrate")
    assert "store_ulr" in line and "not permitted" in line


@pytest.mark.parametrize("args", [("migrate",), ("export",), ("failures",), ("replay",), ("ingest", "."),
                                  ("run", "drops"), ("watch", ".")], ids=lambda a: a[0])
def test_an_unreachable_store_is_one_line(tmp_path: Path, args: tuple[str, ...]) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/nothing"
    line = one_line_failure(tmp_path, env(FEEDWORKER_STORE_URL=url), *args)
    assert "the store can't be reached" in line and "FEEDWORKER_STORE_URL" in line and "refused" in line
    assert not (tmp_path / "drops").exists() and not (tmp_path / ".feedworker").exists()  # nothing was started


def test_status_reports_an_unreachable_store_and_exits_1(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/nothing"
    res = feedworker(env(FEEDWORKER_STORE_URL=url), "status", check=False, cwd=tmp_path)
    assert res.returncode == 1 and "Traceback" not in res.stderr and "UNREACHABLE" in res.stdout


def test_a_store_url_that_is_no_url_is_one_line(tmp_path: Path) -> None:
    line = one_line_failure(tmp_path, env(FEEDWORKER_STORE_URL="postgres//wrong"), "export")
    assert "FEEDWORKER_STORE_URL is not a usable SQLAlchemy URL" in line


def test_run_creates_only_the_last_component_of_the_drop_folder(tmp_path: Path) -> None:
    line = one_line_failure(tmp_path, env(), "run", "typo/drops")
    assert "typo/drops" in line and "does not exist" in line
    assert not (tmp_path / "typo").exists() and not (tmp_path / "feedworker.db").exists()
    (tmp_path / "a-file").write_text("x")
    res = feedworker(env(), "run", "a-file", check=False, cwd=tmp_path)  # click's own usage error
    assert res.returncode == 2 and "'a-file' is a file" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("command", ["export", "failures"])
def test_read_only_commands_never_create_or_migrate_a_sqlite_store(tmp_path: Path, command: str) -> None:
    line = one_line_failure(tmp_path, env(), command)
    assert "no SQLite store" in line and not (tmp_path / "feedworker.db").exists()
    sqlite3.connect(tmp_path / "feedworker.db").close()  # an empty file: a store with no schema
    line = one_line_failure(tmp_path, env(), command)
    assert "no schema yet" in line and "feedworker migrate" in line
    with sqlite3.connect(tmp_path / "feedworker.db") as conn:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []  # still nothing written


@pytest.mark.parametrize("command", ["export", "failures", "status"])
def test_read_only_commands_say_when_the_schema_is_not_this_codes(tmp_path: Path, command: str) -> None:
    with fresh_pg_database() as url:
        e = env(FEEDWORKER_STORE_URL=url)
        if command == "status":  # its table says it (the store row), exit 1
            res = feedworker(e, command, "--json", check=False, cwd=tmp_path)
            assert res.returncode == 1 and "run `feedworker migrate`" in json.loads(res.stdout)["store_error"]
        else:
            assert "no schema yet" in one_line_failure(tmp_path, e, command)
        plain = url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(plain) as conn:
            tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
        assert tables == []  # looking migrated nothing
        feedworker(e, "migrate", cwd=tmp_path)
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute("UPDATE alembic_version SET version_num = 'fff0'")  # as a newer feedworker left it
        line = one_line_failure(tmp_path, e, command)
        assert "revision fff0" in line and "newer than this feedworker knows" in line
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute("UPDATE alembic_version SET version_num = %s", (head_revision(),))
        res = feedworker(e, command, check=False, cwd=tmp_path)
        assert res.returncode in (0, 1) and "feedworker:" not in res.stderr  # current: it reads (status: broker?)
