"""The management API on a real grpc.aio server over a fake ClusterView: every RPC, argument
checks (INVALID_ARGUMENT naming the field) and the mapping of the view's errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest

from hubspoke.api.hubspoke.v1 import management_pb2 as mpb
from tests.lab.apifake import EPOCH, HUB, Api, Stubs, running_api, scope_doc, stubs


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async with running_api() as a:
        yield a


@pytest.fixture
async def s(api: Api) -> AsyncIterator[Stubs]:
    async with stubs(api.address) as st:
        yield st


async def test_cluster_state(s: Stubs) -> None:
    state = await s.cluster.GetClusterState(mpb.GetClusterStateRequest())
    assert (state.hub_node, state.epoch, state.hub_address) == (HUB, EPOCH, "127.0.0.1:7777")
    assert [sp.node for sp in state.spokes] == ["spoke-1", "spoke-2"]
    one, two = state.spokes
    assert one.live and not two.live
    assert one.bucket_count == 128
    assert list(one.blocks) == ["lan/10.0.0.100-10.0.0.163"]
    assert (one.utilization[0].scope, one.utilization[0].bound, one.utilization[0].free) == (
        "lan",
        3,
        61,
    )
    assert one.report_age_s == 0.5
    assert two.report_age_s == -1.0  # no report yet
    reserve = state.blocks[2]
    assert reserve.owner == "" and not reserve.HasField("handover_to")
    to_reserve = state.blocks[1]
    assert to_reserve.HasField("handover_to") and to_reserve.handover_to == ""
    assert state.buckets_total == 256


async def test_scope_lifecycle(api: Api, s: Stubs) -> None:
    listed = await s.scopes.ListScopes(mpb.ListScopesRequest())
    assert [x.name for x in listed.scopes] == ["lan"]
    assert json.loads(listed.scopes[0].scope_json) == scope_doc("lan")

    doc = scope_doc("branch", "10.1.0.0/22")
    created = await s.scopes.CreateScope(mpb.CreateScopeRequest(scope_json=json.dumps(doc)))
    assert created.name == "branch" and json.loads(created.scope_json) == doc
    assert api.view.scopes["branch"] == doc

    got = await s.scopes.GetScope(mpb.GetScopeRequest(name="branch"))
    assert json.loads(got.scope_json) == doc

    changed = {**doc, "lease_time": 600}
    updated = await s.scopes.UpdateScope(
        mpb.UpdateScopeRequest(name="branch", scope_json=json.dumps(changed))
    )
    assert json.loads(updated.scope_json)["lease_time"] == 600
    assert api.view.scopes["branch"]["lease_time"] == 600

    await s.scopes.DeleteScope(mpb.DeleteScopeRequest(name="branch"))
    assert "branch" not in api.view.scopes


@pytest.mark.parametrize(
    ("by", "value", "ips"),
    [
        ("ip", "10.0.0.103", ["10.0.0.103"]),
        ("mac", "02:00:00:00:00:02", ["10.0.0.102"]),
        ("mac", "02-00-00-00-00-04", ["10.0.0.104"]),
        ("mac", "020000000005", ["10.0.0.105"]),
        ("client_id", "01:02:00:00:00:01", ["10.0.0.101"]),
        ("client_id", "010200000003", ["10.0.0.103"]),
        ("ip", "10.0.0.250", []),
    ],
)
async def test_get_lease(s: Stubs, by: str, value: str, ips: list[str]) -> None:
    found = await s.leases.GetLease(mpb.GetLeaseRequest(**{by: value}))
    assert [x.ip for x in found.leases] == ips


async def test_lease_fields(s: Stubs) -> None:
    (lease,) = (await s.leases.GetLease(mpb.GetLeaseRequest(ip="10.0.0.101"))).leases
    assert lease.scope == "lan" and lease.state == "bound" and lease.node == "spoke-1"
    assert lease.client_id == "010200000001"
    assert lease.hw_address == "02:00:00:00:00:01"
    assert lease.hostname == "host1"
    assert (lease.start, lease.expires) == (1_700_000_000.0, 1_700_003_600.0)


async def test_list_leases_pages(s: Stubs) -> None:
    seen: list[str] = []
    token = ""
    for _ in range(10):
        page = await s.leases.ListLeases(
            mpb.ListLeasesRequest(scope="lan", page_size=2, page_token=token)
        )
        assert len(page.leases) <= 2
        seen += [x.ip for x in page.leases]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"10.0.0.{100 + n}" for n in range(1, 6)]
    default = await s.leases.ListLeases(mpb.ListLeasesRequest())
    assert len(default.leases) == 5 and default.next_page_token == ""


async def test_drain_and_undrain(api: Api, s: Stubs) -> None:
    await s.spokes.Drain(mpb.DrainRequest(node="spoke-2"))
    assert api.view.drained == {"spoke-2"}
    state = await s.cluster.GetClusterState(mpb.GetClusterStateRequest())
    assert [sp.draining for sp in state.spokes] == [False, True]
    await s.spokes.Undrain(mpb.UndrainRequest(node="spoke-2"))
    assert api.view.drained == set()


BAD_ARGUMENTS: list[tuple[str, str, Any, str]] = [
    ("leases", "GetLease", mpb.GetLeaseRequest(ip="10.0.0.300"), "ip: not an IPv4 address"),
    ("leases", "GetLease", mpb.GetLeaseRequest(ip=""), "ip: not an IPv4 address"),
    ("leases", "GetLease", mpb.GetLeaseRequest(mac="zz:00"), "mac: not hex octets"),
    ("leases", "GetLease", mpb.GetLeaseRequest(mac="0" * 40), "mac: must hold 1 to 16 octets"),
    ("leases", "GetLease", mpb.GetLeaseRequest(client_id=""), "client_id: must hold"),
    ("leases", "GetLease", mpb.GetLeaseRequest(), "by: one of ip, mac or client_id"),
    ("leases", "ListLeases", mpb.ListLeasesRequest(page_size=5000), "page_size: at most 1000"),
    ("leases", "ListLeases", mpb.ListLeasesRequest(page_token="zz"), "page_token:"),
    ("leases", "ListLeases", mpb.ListLeasesRequest(scope="a b"), "scope: not a valid name"),
    ("scopes", "GetScope", mpb.GetScopeRequest(), "name: required"),
    ("scopes", "DeleteScope", mpb.DeleteScopeRequest(), "name: required"),
    ("scopes", "CreateScope", mpb.CreateScopeRequest(), "scope_json: required"),
    ("scopes", "CreateScope", mpb.CreateScopeRequest(scope_json="{x"), "scope_json: not JSON"),
    ("scopes", "CreateScope", mpb.CreateScopeRequest(scope_json="[1]"), "scope_json: must be"),
    (
        "scopes",
        "CreateScope",
        mpb.CreateScopeRequest(scope_json='{"subnet": "10.9.0.0/24"}'),
        "scope_json.name: required",
    ),
    (
        "scopes",
        "CreateScope",
        mpb.CreateScopeRequest(scope_json='{"name": "x"}'),
        "subnet: required",  # the view's own validation
    ),
    (
        "scopes",
        "UpdateScope",
        mpb.UpdateScopeRequest(name="lan", scope_json=json.dumps(scope_doc("other"))),
        "scope_json.name: 'other' differs from name 'lan'",
    ),
    ("spokes", "Drain", mpb.DrainRequest(), "node: required"),
    ("spokes", "Undrain", mpb.UndrainRequest(node="two words"), "node: not a valid name"),
]


@pytest.mark.parametrize(("stub", "method", "request_", "message"), BAD_ARGUMENTS)
async def test_invalid_argument(
    s: Stubs, stub: str, method: str, request_: Any, message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await getattr(getattr(s, stub), method)(request_)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(message), caught.value.details()


VIEW_ERRORS: list[tuple[str, str, Any, Any, str]] = [
    ("scopes", "GetScope", mpb.GetScopeRequest(name="nope"), "NOT_FOUND", "scope 'nope'"),
    ("scopes", "DeleteScope", mpb.DeleteScopeRequest(name="nope"), "NOT_FOUND", "scope"),
    (
        "scopes",
        "UpdateScope",
        mpb.UpdateScopeRequest(name="nope", scope_json=json.dumps(scope_doc("nope"))),
        "NOT_FOUND",
        "scope 'nope'",
    ),
    (
        "scopes",
        "CreateScope",
        mpb.CreateScopeRequest(scope_json=json.dumps(scope_doc("lan"))),
        "ALREADY_EXISTS",
        "scope 'lan' exists",
    ),
    ("spokes", "Drain", mpb.DrainRequest(node="ghost"), "NOT_FOUND", "node 'ghost'"),
    (
        "spokes",
        "Undrain",
        mpb.UndrainRequest(node="spoke-1"),
        "FAILED_PRECONDITION",
        "node 'spoke-1' is not draining",
    ),
]


@pytest.mark.parametrize(("stub", "method", "request_", "code", "message"), VIEW_ERRORS)
async def test_view_errors_map_to_codes(
    s: Stubs, stub: str, method: str, request_: Any, code: str, message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await getattr(getattr(s, stub), method)(request_)
    assert caught.value.code() == getattr(grpc.StatusCode, code)
    assert caught.value.details().startswith(message), caught.value.details()
