"""Fixtures of the fault suite: one placematch (four `placematch serve` processes, or `REPLICAS` of
each; a fresh PostgreSQL database per service, on the session's real Kafka under a topic prefix of
its own) shared by the tests of a module, a webhook receiver subscribed before any referral, and
the client's ledger."""
from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from services import SERVICES
from tests.conftest import KafkaBroker, _execute
from tests.faults.harness import (
    Audit,
    Client,
    Cluster,
    Ledger,
    ServiceProcess,
    WebhookReceiver,
    enrol_providers,
    service_env,
)

FEES = [425000, 520000, 300000]  # one provider each, all eligible for every referral


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: crashes Kafka and the services under load (tests/faults)")


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def service_databases(database_url: str) -> Iterator[dict[str, str]]:
    names = {s: f"faults_{uuid.uuid4().hex[:12]}_{s}" for s in SERVICES}
    for name in names.values():
        _execute(database_url, f'CREATE DATABASE "{name}"')
    try:
        yield {s: make_url(database_url).set(database=n).render_as_string(hide_password=False)
               for s, n in names.items()}
    finally:
        for name in names.values():
            _execute(database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
async def cluster(request: pytest.FixtureRequest, kafka_broker: KafkaBroker, service_databases: dict[str, str],
                  tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    """`REPLICAS = n` in a test module runs n processes of every service (default 1)."""
    replicas = int(getattr(request.module, "REPLICAS", 1))
    prefix = f"faults-{uuid.uuid4().hex[:12]}."
    logs = Path(tmp_path_factory.mktemp("faults-logs"))
    cluster = Cluster({
        s: [ServiceProcess(s, service_env(bootstrap=kafka_broker.bootstrap, database_url=service_databases[s],
                                          topic_prefix=prefix), logs, replica=i) for i in range(replicas)]
        for s in SERVICES}, kafka_broker.bootstrap, prefix)
    try:
        await cluster.start_all()
        yield cluster
    finally:
        cluster.stop_all()


@pytest.fixture(scope="module")
def ledger() -> Ledger:
    return Ledger()


@pytest.fixture(scope="module")
async def client(cluster: Cluster, ledger: Ledger, receiver: WebhookReceiver) -> AsyncIterator[Client]:
    client = Client(cluster, ledger)
    try:
        await enrol_providers(client, receiver, FEES)
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def audit(cluster: Cluster, ledger: Ledger, receiver: WebhookReceiver) -> Audit:
    return Audit(cluster, ledger, receiver)
