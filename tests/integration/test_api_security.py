"""Token auth, health and reflection without a token, TLS and mTLS on the hub's gRPC API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc  # type: ignore[import-untyped]
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from hub.api.server import ServerTls
from hub.api.service import SERVICE_NAMES
from hubspoke.api.hubspoke.v1 import management_pb2 as mpb
from hubspoke.api.hubspoke.v1 import report_pb2 as rpb
from hubspoke.rpc.client import ClientTls
from tests.lab.apifake import EPOCH, Api, running_api, stubs
from tests.lab.etcd import TlsFiles, make_tls_files

TOKENS = ("operator-secret", "spoke-secret")


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async with running_api(tokens=TOKENS) as a:
        yield a


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("api-tls"))


@pytest.mark.parametrize("token", TOKENS)
async def test_any_configured_token_passes(api: Api, token: str) -> None:
    async with stubs(api.address, token=token) as s:
        state = await s.cluster.GetClusterState(mpb.GetClusterStateRequest())
    assert state.epoch == EPOCH


@pytest.mark.parametrize(
    ("token", "reason"),
    [(None, "missing token"), ("wrong", "bad token"), ("operator", "bad token")],
)
async def test_unauthenticated(api: Api, token: str | None, reason: str) -> None:
    async with stubs(api.address, token=token) as s:
        for call in (
            s.cluster.GetClusterState(mpb.GetClusterStateRequest()),
            s.spokes.Drain(mpb.DrainRequest(node="spoke-1")),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert (caught.value.code(), caught.value.details()) == (
                grpc.StatusCode.UNAUTHENTICATED,
                reason,
            )
    assert api.view.drained == set()  # the handler never ran


async def test_report_stream_needs_a_token(api: Api) -> None:
    async with stubs(api.address) as s:
        call = s.report.Report()
        await call.write(rpb.UtilizationReport(node="spoke-1", state="NORMAL", seq=1))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert caught.value.details() == "missing token"
    assert api.view.reports == []
    async with stubs(api.address, token="spoke-secret") as s:
        call = s.report.Report()
        await call.write(rpb.UtilizationReport(node="spoke-1", state="NORMAL", seq=1))
        assert (await call.read()).seq == 1
        await call.done_writing()


async def test_health_answers_without_a_token(api: Api) -> None:
    channel = grpc.aio.insecure_channel(api.address)
    try:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", *SERVICE_NAMES):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await channel.close()


async def test_reflection_answers_without_a_token(api: Api) -> None:
    channel = grpc.aio.insecure_channel(api.address)
    try:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="hubspoke.v1.ClusterState"
            ),
        ]
        replies = [r async for r in stub.ServerReflectionInfo(iter(requests))]
    finally:
        await channel.close()
    names = {s.name for s in replies[0].list_services_response.service}
    assert set(SERVICE_NAMES) <= names
    assert "grpc.health.v1.Health" in names
    assert replies[1].file_descriptor_response.file_descriptor_proto  # the descriptor bytes


def _server_tls(files: TlsFiles, *, mtls: bool) -> ServerTls:
    return ServerTls(files.server_cert, files.server_key, files.ca if mtls else None)


async def test_tls_with_token(tls_files: TlsFiles) -> None:
    tls = ClientTls(ca_file=tls_files.ca)
    async with (
        running_api(tokens=TOKENS, tls=_server_tls(tls_files, mtls=False)) as api,
        stubs(api.address, token="operator-secret", tls=tls) as s,
    ):
        assert (await s.cluster.GetClusterState(mpb.GetClusterStateRequest())).epoch == EPOCH


async def test_mtls_accepts_a_client_certificate(tls_files: TlsFiles) -> None:
    tls = ClientTls(tls_files.ca, tls_files.client_cert, tls_files.client_key)
    async with (
        running_api(tls=_server_tls(tls_files, mtls=True)) as api,
        stubs(api.address, tls=tls) as s,
    ):
        assert (await s.cluster.GetClusterState(mpb.GetClusterStateRequest())).epoch == EPOCH


@pytest.mark.parametrize("client", ["no-certificate", "plaintext"])
async def test_mtls_refuses_a_client_without_certificate(tls_files: TlsFiles, client: str) -> None:
    """A client without a certificate fails the handshake: the call ends UNAVAILABLE."""
    tls = ClientTls(ca_file=tls_files.ca) if client == "no-certificate" else None
    async with (
        running_api(tls=_server_tls(tls_files, mtls=True)) as api,
        stubs(api.address, tls=tls) as s,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await s.cluster.GetClusterState(mpb.GetClusterStateRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_client_certificate_needs_its_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="both cert_file and key_file"):
        ClientTls(cert_file=tmp_path / "c.pem").credentials()
