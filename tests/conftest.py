"""Shared fixtures: a real Kafka broker and a real PostgreSQL for integration and e2e tests.

Each is found, in this order:
1. the environment: `PLACEMATCH_TEST_KAFKA` (bootstrap address) / `PLACEMATCH_TEST_DATABASE_URL`
   (`postgresql+asyncpg://...`), as exported by `deploy/test-env.sh` (what `make test` uses);
2. testcontainers, if a Docker engine answers;
3. the local deploy scripts (`deploy/kafka/kafka.sh`, `deploy/postgres.sh`), started for the session
   and stopped at its end.
If none works the test is skipped, or fails when `CI=true`.

Both are started lazily: unit tests that use neither start nothing.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.support.oidc import oidc_provider  # noqa: F401 (the real OpenID Connect provider, Keycloak)

ROOT = Path(__file__).resolve().parents[1]

# `placematch serve` refuses the published default secret; tests and the services they start share this one
os.environ.setdefault("PLACEMATCH_JWT_SECRET", "placematch-test-secret-" + "0123456789abcdef" * 2)
KAFKA_CTL = ROOT / "deploy" / "kafka" / "kafka.sh"
POSTGRES_CTL = ROOT / "deploy" / "postgres.sh"

KAFKA_FIXTURES = {"kafka_broker", "kafka_bootstrap"}
POSTGRES_FIXTURES = {"database_url", "fresh_database_url"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by the infrastructure they use, so `-m "not kafka"` works without bookkeeping."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & KAFKA_FIXTURES:
            item.add_marker(pytest.mark.kafka)
        if names & POSTGRES_FIXTURES:
            item.add_marker(pytest.mark.postgres)


# --- how to give up -----------------------------------------------------------------------------


def _unavailable(what: str, why: str) -> NoReturn:
    message = f"{what} is not available: {why}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: tests that need it fail instead of skipping)", pytrace=False)
    pytest.skip(message)


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reachable(address: str, timeout: float = 3.0) -> bool:
    host, _, port = address.split(",")[0].strip().rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


@functools.cache
def _docker_available() -> bool:
    """True if a Docker engine answers within a few seconds (never hangs, never raises)."""
    if os.environ.get("PLACEMATCH_TEST_NO_DOCKER"):
        return False
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _scratch_dir(name: str) -> Path:
    # Under /tmp and world-traversable: as root, PostgreSQL runs as `postgres` and must reach it.
    path = Path(tempfile.mkdtemp(prefix=f"placematch-{name}-", dir="/tmp"))
    path.chmod(0o755)
    return path


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


# --- Kafka --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KafkaBroker:
    """The session's broker. `ctl`/`dir` are set when we can stop and restart it (local broker)."""

    bootstrap: str
    ctl: Path | None = None
    dir: Path | None = None

    @property
    def controllable(self) -> bool:
        return self.ctl is not None and self.dir is not None

    def _ctl(self, command: str, timeout: float = 180) -> None:
        if not self.controllable:
            _unavailable("A controllable Kafka broker", "it was not started by the test run, so it cannot be "
                         "stopped or restarted")
        done = _run([str(self.ctl), command, "--dir", str(self.dir)], timeout)
        if done.returncode != 0:
            raise RuntimeError(f"kafka.sh {command} failed:\n{_tail(done.stderr)}")

    def stop(self) -> None:
        """Graceful shutdown (SIGTERM); waits until the process has exited."""
        self._ctl("stop")

    def kill(self) -> None:
        """Crash it (SIGKILL); waits until the process has gone."""
        self._ctl("kill")

    def start(self) -> None:
        """Start it again on the same address and data; returns once it serves requests."""
        self._ctl("start")

    def restart(self) -> None:
        self._ctl("restart")

    def ensure_running(self) -> None:
        """Start it if a test stopped or killed it (a no-op when it runs); for `finally` blocks."""
        if self.controllable:
            self._ctl("start")


def _local_kafka() -> Iterator[KafkaBroker]:
    directory = _scratch_dir("kafka")
    try:
        done = _run([str(KAFKA_CTL), "start", "--port", str(_free_port()), "--dir", str(directory)], timeout=900)
        problem = None if done.returncode == 0 else _tail(done.stderr)
    except (OSError, subprocess.TimeoutExpired) as error:
        problem = str(error)
    if problem is not None:
        _run([str(KAFKA_CTL), "stop", "--dir", str(directory)], timeout=60)
        shutil.rmtree(directory, ignore_errors=True)
        _unavailable("Kafka", f"{KAFKA_CTL} start failed:\n{problem}")
    broker = KafkaBroker(done.stdout.strip().splitlines()[-1], KAFKA_CTL, directory)
    exported = {
        "PLACEMATCH_TEST_KAFKA": broker.bootstrap,
        "PLACEMATCH_TEST_KAFKA_PORT": broker.bootstrap.rpartition(":")[2],
        "PLACEMATCH_TEST_KAFKA_CTL": str(KAFKA_CTL),
        "PLACEMATCH_TEST_KAFKA_DIR": str(directory),
        "PLACEMATCH_KAFKA_HOME": str(KAFKA_CTL.parent),
    }
    os.environ.update(exported)
    try:
        yield broker
    finally:
        for name in exported:
            os.environ.pop(name, None)
        _run([str(KAFKA_CTL), "stop", "--dir", str(directory)], timeout=60)
        shutil.rmtree(directory, ignore_errors=True)


def _running_container(container: Any, what: str) -> Iterator[Any]:
    """Start a testcontainers container for the session; any failure means "not available"."""
    try:
        container.start()
    except Exception as error:  # noqa: BLE001 - any failure means "no container"
        with contextlib.suppress(Exception):
            container.stop()
        _unavailable(what, f"testcontainers could not start {what}: {error}")
    try:
        yield container
    finally:
        container.stop()


def _container_kafka() -> Iterator[KafkaBroker]:
    from testcontainers.community.kafka import KafkaContainer

    for container in _running_container(KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft(), "Kafka"):
        yield KafkaBroker(container.get_bootstrap_server())


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """The session's Kafka broker; `.bootstrap` is its address. Local brokers can be `.stop()`ped,
    `.kill()`ed and `.start()`ed again on the same address and data (tests of recovery)."""
    bootstrap = os.environ.get("PLACEMATCH_TEST_KAFKA")
    if bootstrap:
        if not _reachable(bootstrap):
            _unavailable("Kafka", f"PLACEMATCH_TEST_KAFKA={bootstrap} does not accept connections")
        ctl, directory = os.environ.get("PLACEMATCH_TEST_KAFKA_CTL"), os.environ.get("PLACEMATCH_TEST_KAFKA_DIR")
        yield KafkaBroker(
            bootstrap,
            Path(ctl).resolve() if ctl else None,
            Path(directory) if directory else None,
        )
    elif _docker_available():
        yield from _container_kafka()
    else:
        yield from _local_kafka()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaBroker) -> str:
    """Bootstrap address (`host:port`) of a real Kafka broker for the whole session."""
    return kafka_broker.bootstrap


@pytest.fixture
def kafka_topic_prefix() -> str:
    """A prefix unique to this test (`test-<12 hex>.`), so its topics and groups collide with none."""
    return f"test-{uuid.uuid4().hex[:12]}."


# --- PostgreSQL ---------------------------------------------------------------------------------


def _local_postgres() -> Iterator[str]:
    if os.environ.get("CI") == "true":
        _run([str(POSTGRES_CTL), "ensure"], timeout=900)
    directory = _scratch_dir("postgres")
    try:
        done = _run([str(POSTGRES_CTL), "start", "--port", str(_free_port()), "--dir", str(directory)], timeout=180)
        problem = None if done.returncode == 0 else _tail(done.stderr)
    except (OSError, subprocess.TimeoutExpired) as error:
        problem = str(error)
    if problem is not None:
        _run([str(POSTGRES_CTL), "stop", "--dir", str(directory)], timeout=60)
        shutil.rmtree(directory, ignore_errors=True)
        _unavailable(
            "PostgreSQL", f"{POSTGRES_CTL} start failed (as root, `{POSTGRES_CTL} ensure` installs it):\n{problem}"
        )
    url = done.stdout.strip().splitlines()[-1]
    os.environ["PLACEMATCH_TEST_DATABASE_URL"] = url
    try:
        yield url
    finally:
        os.environ.pop("PLACEMATCH_TEST_DATABASE_URL", None)
        _run([str(POSTGRES_CTL), "stop", "--dir", str(directory)], timeout=60)
        shutil.rmtree(directory, ignore_errors=True)


def _container_postgres() -> Iterator[str]:
    from testcontainers.community.postgres import PostgresContainer

    container = PostgresContainer(
        "postgres:16-alpine", username="placematch", password="placematch", dbname="placematch", driver="asyncpg"
    )
    for running in _running_container(container, "PostgreSQL"):
        yield running.get_connection_url()


def _asyncpg_dsn(url: str, database: str | None = None) -> str:
    from sqlalchemy.engine import make_url

    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def _execute(url: str, *statements: str) -> None:
    """Run statements over asyncpg on a private event loop in a worker thread.

    A thread keeps this usable from sync fixtures without touching the loop pytest-asyncio runs
    the tests on.
    """
    import asyncpg

    async def run() -> None:
        connection = await asyncpg.connect(_asyncpg_dsn(url), timeout=10)
        try:
            for statement in statements:
                await connection.execute(statement)
        finally:
            await connection.close()

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, run()).result(timeout=60)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """Async SQLAlchemy URL (`postgresql+asyncpg://...`) of a real PostgreSQL for the session.

    The role is a superuser, so it can create databases; prefer `fresh_database_url` for tests
    that write, so they do not see each other's rows."""
    url = os.environ.get("PLACEMATCH_TEST_DATABASE_URL")
    if url:
        problem = None
        try:
            _execute(url, "SELECT 1")
        except Exception as error:  # noqa: BLE001 - any failure means "not usable"
            problem = f"PLACEMATCH_TEST_DATABASE_URL does not answer: {error}"
        if problem:
            _unavailable("PostgreSQL", problem)
        yield url
    elif _docker_available():
        yield from _container_postgres()
    else:
        yield from _local_postgres()


@pytest.fixture
def fresh_database_url(database_url: str) -> Iterator[str]:
    """URL of a new, empty database created for this test alone and dropped after it."""
    from sqlalchemy.engine import make_url

    name = f"test_{uuid.uuid4().hex[:16]}"
    _execute(database_url, f'CREATE DATABASE "{name}"')
    try:
        yield make_url(database_url).set(database=name).render_as_string(hide_password=False)
    finally:
        _execute(database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- Prometheus ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def promtool() -> str:
    """Path of Debian's `promtool` (package `prometheus`)."""
    found = shutil.which("promtool")
    if found is None:
        _unavailable("promtool", "install Debian's package: apt-get install -y --no-install-recommends prometheus")
    return found


@dataclass
class PrometheusServer:
    url: str
    process: subprocess.Popen[bytes]
    dir: Path

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query over the HTTP API: the result vector."""
        import httpx

        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def targets(self) -> list[dict[str, Any]]:
        import httpx

        return list(httpx.get(f"{self.url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"])


@pytest.fixture
def prometheus() -> Iterator[Any]:
    """Start a real Prometheus (Debian's `prometheus`) scraping the given jobs every second:
    `prometheus({"referral": ["127.0.0.1:8002"], ...})` → a `PrometheusServer`, stopped after the test."""
    import time

    import httpx
    import yaml

    binary = shutil.which("prometheus")
    if binary is None:
        _unavailable("Prometheus", "install Debian's package: apt-get install -y --no-install-recommends prometheus")
    started: list[PrometheusServer] = []

    def start(jobs: dict[str, list[str]]) -> PrometheusServer:
        directory = _scratch_dir("prometheus")
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                  "scrape_configs": [{"job_name": job, "scrape_interval": "1s", "scrape_timeout": "900ms",
                                      "static_configs": [{"targets": targets}]} for job, targets in jobs.items()]}
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = _free_port()
        log = (directory / "prometheus.log").open("wb")
        process = subprocess.Popen(
            [binary, f"--config.file={directory / 'prometheus.yml'}", f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT)
        server = PrometheusServer(f"http://127.0.0.1:{port}", process, directory)
        started.append(server)
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                _unavailable("Prometheus", f"it exited with {process.returncode}:\n"
                             f"{_tail((directory / 'prometheus.log').read_text())}")
            try:
                if httpx.get(f"{server.url}/-/ready", timeout=2).status_code == 200:
                    return server
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                _unavailable("Prometheus", "not ready within 60 s")
            time.sleep(0.1)

    try:
        yield start
    finally:
        for server in started:
            server.process.terminate()
            try:
                server.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()
            shutil.rmtree(server.dir, ignore_errors=True)


# issue 15: `PLACEMATCH_RECORD_EVENTS=<file>` appends every event recorded by any EventStore in this
# process to <file> (one JSON line each: topic, envelope), for tests/unit/test_event_schemas.py.
if os.environ.get("PLACEMATCH_RECORD_EVENTS"):
    import orjson as _orjson

    from shared import store as _store

    _append_many = _store.EventStore.append_many

    async def _recording_append_many(self: Any, conn: Any, batches: Any, **kwargs: Any) -> Any:
        recorded = await _append_many(self, conn, batches, **kwargs)
        topic_of = {b[0]: (b[3] if len(b) > 3 else kwargs.get("topic")) for b in batches}
        with open(os.environ["PLACEMATCH_RECORD_EVENTS"], "ab") as out:
            for envelope in recorded:
                out.write(_orjson.dumps({"topic": topic_of.get(envelope.subject, kwargs.get("topic")),
                                         "event": envelope.to_dict()}) + b"\n")
        return recorded

    _store.EventStore.append_many = _recording_append_many  # type: ignore[method-assign]
