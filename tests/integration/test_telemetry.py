"""Tracing end to end: real OTLP/gRPC export to an in-test receiver, spans checked on arrival."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from spoke.config import TracingConfig
from spoke.dhcp.message import MessageType
from spoke.telemetry import DhcpTracer, setup_tracing, shutdown_tracing
from tests.lab.otlp import OtlpReceiver

CLIENT = b"\x01\x01\x02\x00\x00\x00\x00\x07"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as r:
        yield r


async def test_transaction_and_commit_spans_arrive_linked(receiver: OtlpReceiver) -> None:
    provider = setup_tracing(TracingConfig(otlp_endpoint=receiver.endpoint), "spoke-t")
    assert provider is not None
    tracer = DhcpTracer(provider)
    txn = tracer.transaction(MessageType.REQUEST, 0x1234ABCD, CLIENT, state="NORMAL")
    txn.set_scope("lan")
    with txn.commit() as commit:
        assert commit.is_recording()
    txn.end("ack")
    assert await shutdown_tracing(provider)

    spans = await asyncio.to_thread(receiver.wait_for, 2)
    by_name = {s.name: s for s in spans}
    assert set(by_name) == {"dhcp.request", "etcd.commit"}
    top, child = by_name["dhcp.request"], by_name["etcd.commit"]
    assert child.parent_span_id == top.span_id and child.trace_id == top.trace_id
    assert top.parent_span_id == b""
    assert top.attributes == {
        "dhcp.type": "REQUEST",
        "dhcp.xid": "0x1234abcd",
        "dhcp.client": CLIENT.hex(),
        "dhcp.scope": "lan",
        "dhcp.outcome": "ack",
        "hubspoke.state": "NORMAL",
    }
    assert top.resource["service.name"] == "hubspoke-spoke"
    assert top.resource["hubspoke.node"] == "spoke-t"


async def test_reason_and_errors_are_recorded(receiver: OtlpReceiver) -> None:
    provider = setup_tracing(TracingConfig(otlp_endpoint=f"http://{receiver.endpoint}"), "s")
    tracer = DhcpTracer(provider)
    tracer.transaction(MessageType.DISCOVER, 1, CLIENT).end("drop", "not-my-bucket")
    with (
        pytest.raises(RuntimeError),
        tracer.transaction("decline", 2, CLIENT) as txn,
        txn.commit(),
    ):
        raise RuntimeError("etcd down")
    await shutdown_tracing(provider)

    spans = await asyncio.to_thread(receiver.wait_for, 3)
    by_name = {s.name: s for s in spans}
    assert by_name["dhcp.discover"].attributes["dhcp.outcome"] == "drop"
    assert by_name["dhcp.discover"].attributes["dhcp.reason"] == "not-my-bucket"
    assert by_name["dhcp.decline"].attributes["dhcp.outcome"] == "error"
    assert by_name["dhcp.decline"].attributes["dhcp.reason"] == "RuntimeError"
    assert by_name["etcd.commit"].parent_span_id == by_name["dhcp.decline"].span_id


async def test_unsampled_transactions_export_nothing(receiver: OtlpReceiver) -> None:
    cfg = TracingConfig(otlp_endpoint=receiver.endpoint, sample_ratio=0.0)
    provider = setup_tracing(cfg, "s")
    tracer = DhcpTracer(provider)
    for xid in range(200):
        txn = tracer.transaction(MessageType.DISCOVER, xid, CLIENT)
        assert not txn.is_recording
        with txn.commit():
            pass
        txn.end("offer")
    assert await shutdown_tracing(provider)
    assert receiver.spans == []


async def test_a_burst_fits_the_sized_queue(receiver: OtlpReceiver) -> None:
    provider = setup_tracing(TracingConfig(otlp_endpoint=receiver.endpoint), "s")
    tracer = DhcpTracer(provider)
    burst = 5000  # more than twice the SDK's default queue of 2048
    for xid in range(burst):
        tracer.transaction(MessageType.DISCOVER, xid, CLIENT).end("offer")
    assert await shutdown_tracing(provider, flush_seconds=30)
    spans = await asyncio.to_thread(receiver.wait_for, burst, 30)
    assert len(spans) == burst
    assert len({s.attributes["dhcp.xid"] for s in spans}) == burst


async def test_no_endpoint_means_no_provider_and_free_no_op_spans() -> None:
    assert setup_tracing(TracingConfig(), "s") is None
    tracer = DhcpTracer(None)
    txn = tracer.transaction(None, 7, CLIENT)
    assert not txn.is_recording
    txn.set_scope("lan")
    with txn.commit():
        pass
    txn.end("drop", "bad-packet")
    assert await shutdown_tracing(None)
