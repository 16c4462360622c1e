"""Integration fixtures: one real etcd for the session, a fresh client and key prefix per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from hubspoke.etcd import EtcdClient
from tests.lab.etcd import EtcdServer


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    """A plain (no TLS, no auth) etcd shared by every test; tests isolate by key prefix."""
    server = EtcdServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def etcd(etcd_server: EtcdServer) -> AsyncIterator[EtcdClient]:
    """A client of the shared etcd, closed after the test."""
    client = await EtcdClient.connect(etcd_server.client_config())
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def key_prefix() -> bytes:
    """A key prefix no other test uses, ending in `/`."""
    return f"/hubspoke-test/{uuid.uuid4().hex}/".encode()
