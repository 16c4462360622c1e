"""hubspoke.etcd over TLS with a client certificate, and with etcd user/password authentication."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hubspoke.etcd import (
    EtcdAuthError,
    EtcdClient,
    EtcdConfig,
    EtcdError,
    Op,
    Session,
    watch_prefix,
)
from tests.lab.etcd import EtcdServer


@pytest.fixture(scope="module")
def secure_etcd() -> Iterator[EtcdServer]:
    server = EtcdServer(tls=True, auth=True)
    server.start()
    try:
        yield server
    finally:
        server.close()


async def test_tls_client_certificate_and_auth(secure_etcd: EtcdServer) -> None:
    async with await EtcdClient.connect(secure_etcd.client_config()) as client:
        assert (await client.status()).version == "3.4.23"
        put = await client.put(b"/secure/a", b"1")
        result = await client.txn([], [Op.get(b"/secure/a")])
        assert result.succeeded
        async for batch in watch_prefix(client, b"/secure/", put.revision):
            assert batch.events[0].kv.value == b"1"
            break
        session = await Session.open(client, ttl=5)
        await session.close()


async def test_wrong_password_is_an_auth_error(secure_etcd: EtcdServer) -> None:
    config = secure_etcd.client_config(password="wrong")
    with pytest.raises(EtcdAuthError):
        await EtcdClient.connect(config)


async def test_missing_credentials_are_refused(secure_etcd: EtcdServer) -> None:
    config = secure_etcd.client_config(user=None, password=None)
    async with await EtcdClient.connect(config) as client:
        with pytest.raises(EtcdAuthError):
            await client.put(b"/secure/b", b"1")


async def test_tls_without_client_certificate_fails(secure_etcd: EtcdServer) -> None:
    assert secure_etcd.tls_files is not None
    config = EtcdConfig(
        endpoints=(secure_etcd.endpoint,),
        ca_file=secure_etcd.tls_files.ca,
        user="root",
        password="irrelevant",
        request_timeout=3.0,
    )
    with pytest.raises(EtcdError):
        await EtcdClient.connect(config)


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        EtcdConfig(endpoints=())
    with pytest.raises(ValueError):
        EtcdConfig(user="root")
    with pytest.raises(ValueError):
        EtcdConfig(cert_file=None, key_file=None, ca_file=None, user=None, request_timeout=0)


async def test_expired_token_is_renewed_once(secure_etcd: EtcdServer) -> None:
    async with await EtcdClient.connect(secure_etcd.client_config()) as client:
        client.transport._token = "simple-token-that-etcd-never-issued.1"  # as after expiry
        put = await client.put(b"/secure/renewed", b"1")
        assert put.revision > 0
        assert client.transport._token != "simple-token-that-etcd-never-issued.1"
