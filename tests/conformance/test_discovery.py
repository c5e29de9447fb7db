"""One suite over every discovery backend: embedded, and real etcd (started by
scripts/test.sh; required in CI, skipped loudly elsewhere when not running)."""

from __future__ import annotations

import asyncio
import os
import threading
import urllib.request
import uuid

import pytest

from controlplane.placement.consul import ConsulServiceDiscovery
from controlplane.placement.discovery import DiscoveryError, WatchEvent, create_service_discovery
from controlplane.placement.embedded import EmbeddedRegistry, EmbeddedServiceDiscovery
from controlplane.placement.etcd import EtcdServiceDiscovery
from controlplane.placement.static import StaticServiceDiscovery
from tests.consul_emulator import ConsulEmulator

EMULATOR_TOKEN = "emulator-acl-token-0123456789"

ETCD_HOST = os.environ.get("ETCD_HOST", "127.0.0.1")
ETCD_PORT = int(os.environ.get("ETCD_PORT", "23790"))


def etcd_available() -> bool:
    try:
        with urllib.request.urlopen(f"http://{ETCD_HOST}:{ETCD_PORT}/health", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def consul_emulator():
    """The emulator serves from its own thread and loop, so each test's loop can reach it."""
    started = threading.Event()
    box = {}

    def serve():
        loop = asyncio.new_event_loop()
        emu = ConsulEmulator(token=EMULATOR_TOKEN)
        box["address"] = loop.run_until_complete(emu.start())
        box["loop"], box["emu"] = loop, emu
        started.set()
        loop.run_forever()
        loop.run_until_complete(emu.close())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(10)
    yield box["address"]
    box["loop"].call_soon_threadsafe(box["loop"].stop)
    thread.join(10)


@pytest.fixture(params=["embedded", "etcd", "consul-emulator", "consul-real"])
def make(request):
    if request.param == "embedded":
        registry = EmbeddedRegistry()
        return lambda: EmbeddedServiceDiscovery(registry, sweep_interval=0.1)
    if request.param == "consul-emulator":
        host, port = request.getfixturevalue("consul_emulator").split(":")
        return lambda: ConsulServiceDiscovery(host, int(port), EMULATOR_TOKEN)
    if request.param == "consul-real":
        addr = os.environ.get("CONSUL_HTTP_ADDR")
        if not addr:
            pytest.skip("SKIPPED LOUDLY: no real Consul (set CONSUL_HTTP_ADDR=host:port to run this suite on one)")
        host, _, port = addr.removeprefix("http://").partition(":")
        return lambda: ConsulServiceDiscovery(host, int(port or 8500), os.environ.get("CONSUL_HTTP_TOKEN"))
    if not etcd_available():
        if os.environ.get("CI"):
            pytest.fail(f"etcd is not running on {ETCD_HOST}:{ETCD_PORT}; scripts/test.sh starts it")
        pytest.skip(f"SKIPPED LOUDLY: no etcd on {ETCD_HOST}:{ETCD_PORT} (run scripts/test.sh)")
    return lambda: EtcdServiceDiscovery(ETCD_HOST, ETCD_PORT)


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def until(predicate, timeout=10.0, message=lambda: ""):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met before the deadline {message()}")
        await asyncio.sleep(0.05)


def run(coro):
    asyncio.run(asyncio.wait_for(coro, 60))


def test_register_discover_deregister(make):
    async def go():
        d = make()
        svc = unique("svc")
        try:
            await d.register("a", "127.0.0.1", 7001, {"station": "alpha"}, service=svc)
            await d.register("b", "127.0.0.1", 7002, service=svc)
            nodes = await d.discover(svc)
            assert [(n.node_id, n.port) for n in nodes] == [("a", 7001), ("b", 7002)]
            assert nodes[0].meta == {"station": "alpha"}
            await d.deregister("a", service=svc)
            assert [n.node_id for n in await d.discover(svc)] == ["b"]
        finally:
            await d.close()

    run(go())


def test_a_node_that_stops_renewing_expires_and_watchers_hear_it(make):
    async def go():
        d, w = make(), make()
        svc = unique("ttl")
        events = []
        try:
            watch = await w.watch(lambda ev, node: events.append((ev, node.node_id)), service=svc)
            await d.register("x", "127.0.0.1", 7100, service=svc, ttl=2)
            await d.register("y", "127.0.0.1", 7101, service=svc, ttl=2)
            await until(
                lambda: {(WatchEvent.ADDED, "x"), (WatchEvent.ADDED, "y")} <= set(events), message=lambda: events
            )
            await asyncio.sleep(2.5)  # longer than the TTL: renewals keep both alive
            assert [n.node_id for n in await d.discover(svc)] == ["x", "y"]
            d.stop_keepalive("x", service=svc)  # as a crashed station would
            await until(lambda: (WatchEvent.REMOVED, "x") in events, message=lambda: events)
            assert [n.node_id for n in await d.discover(svc)] == ["y"]
            await d.register("y", "127.0.0.1", 7999, service=svc, ttl=2)
            await until(lambda: (WatchEvent.UPDATED, "y") in events, message=lambda: events)
            await watch.cancel()
        finally:
            await d.close()
            await w.close()

    run(go())


def test_kv_compare_and_set(make):
    async def go():
        a, b = make(), make()
        key = unique("placement/map")
        try:
            assert await a.kv_get(key) is None
            first = await a.kv_cas(key, b"v1", 0)
            assert first is not None and (await b.kv_get(key)).value == b"v1"
            assert await b.kv_cas(key, b"lost", 0) is None  # must-not-exist fails now
            second = await b.kv_cas(key, b"v2", first.version)
            assert second is not None and second.version != first.version
            assert await a.kv_cas(key, b"stale", first.version) is None  # a's view is stale
            assert (await a.kv_get(key)).value == b"v2"
            await a.kv_delete(key)
            assert await a.kv_get(key) is None
        finally:
            await a.close()
            await b.close()

    run(go())


def test_concurrent_cas_has_exactly_one_winner(make):
    async def go():
        clients = [make() for _ in range(5)]
        key = unique("race")
        try:
            results = await asyncio.gather(*(c.kv_cas(key, b"%d" % i, 0) for i, c in enumerate(clients)))
            winners = [r for r in results if r is not None]
            assert len(winners) == 1
            assert (await clients[0].kv_get(key)).value == winners[0].value
        finally:
            for c in clients:
                await c.close()

    run(go())


def test_prefix_watch_and_list(make):
    async def go():
        d = make()
        prefix = unique("stations") + "/"
        seen = []
        try:
            watch = await d.watch_prefix(prefix, lambda k, e: seen.append((k, e.value if e else None)))
            await d.kv_put(prefix + "s1", b"healthy")
            await d.kv_put(prefix + "s2", b"healthy")
            await d.kv_put("elsewhere-" + prefix, b"ignored")
            await d.kv_delete(prefix + "s1")
            await until(lambda: (prefix + "s1", None) in seen)
            assert seen == [(prefix + "s1", b"healthy"), (prefix + "s2", b"healthy"), (prefix + "s1", None)]
            assert [e.key for e in await d.kv_list(prefix)] == [prefix + "s2"]
            await watch.cancel()
        finally:
            await d.close()

    run(go())


def test_bad_registrations_are_refused(make):
    async def go():
        d = make()
        try:
            for args, msg in (
                (("", "127.0.0.1", 1), "node_id"),
                (("a/b", "127.0.0.1", 1), "node_id"),
                (("a", "", 1), "address"),
                (("a", "127.0.0.1", 70000), "port"),
            ):
                with pytest.raises(ValueError, match=msg):
                    await d.register(*args)
            with pytest.raises(ValueError, match="ttl"):
                await d.register("a", "127.0.0.1", 1, ttl=1)
        finally:
            await d.close()

    run(go())


def test_create_service_discovery_reads_the_environment():
    assert isinstance(create_service_discovery({}), EmbeddedServiceDiscovery)
    etcd = create_service_discovery({"DISCOVERY_TYPE": "etcd", "ETCD_HOST": "127.0.0.1", "ETCD_PORT": "2400"})
    assert isinstance(etcd, EtcdServiceDiscovery) and etcd.base == "http://127.0.0.1:2400/v3"
    static = create_service_discovery(
        {"DISCOVERY_TYPE": "static", "PEER_NODES": '[{"node_id": "1", "address": "127.0.0.1", "port": 7001}]'}
    )
    consul = create_service_discovery({"DISCOVERY_TYPE": "consul", "CONSUL_HTTP_TOKEN": "t0ken-t0ken-t0ken"})
    assert isinstance(consul, ConsulServiceDiscovery) and "t0ken" not in repr(consul)
    nodes = asyncio.run(static.discover())
    assert [(n.node_id, n.port) for n in nodes] == [("1", 7001)]
    # As the specification: static is the default when PEER_NODES names the nodes.
    implied = create_service_discovery({"PEER_NODES": '[{"node_id": "1", "address": "127.0.0.1", "port": 7001}]'})
    assert isinstance(implied, StaticServiceDiscovery)
    for env, msg in (
        ({"DISCOVERY_TYPE": "zookeeper"}, "must be one of"),
        ({"DISCOVERY_TYPE": "static"}, "needs PEER_NODES"),
        ({"DISCOVERY_TYPE": "static", "PEER_NODES": "[{"}, "not valid JSON"),
        ({"DISCOVERY_TYPE": "static", "PEER_NODES": '[{"node_id": "1"}]'}, r"PEER_NODES\[0\] is missing address, port"),
        ({"DISCOVERY_TYPE": "static", "PEER_NODES": '[{"node_id": "1", "address": "h", "port": 0}]'}, "port"),
        ({"DISCOVERY_TYPE": "etcd", "ETCD_PORT": "abc"}, "ETCD_PORT must be a port number"),
        ({"DISCOVERY_TYPE": "consul", "CONSUL_PORT": "99999"}, "CONSUL_PORT must be in 1..65535"),
    ):
        with pytest.raises(DiscoveryError, match=msg):
            create_service_discovery(env)


def test_static_discovery_refuses_unlisted_registrations():
    d = create_service_discovery(
        {"DISCOVERY_TYPE": "static", "PEER_NODES": '[{"node_id": "1", "address": "127.0.0.1", "port": 7001}]'}
    )

    async def go():
        await d.register("1", "127.0.0.1", 7001)
        with pytest.raises(DiscoveryError, match="not in PEER_NODES"):
            await d.register("2", "127.0.0.1", 7002)

    asyncio.run(go())


def test_consul_wrong_token_is_a_clear_error_without_the_token(consul_emulator):
    host, port = consul_emulator.split(":")

    async def go():
        d = ConsulServiceDiscovery(host, int(port), "not-the-right-token-123")
        try:
            with pytest.raises(DiscoveryError, match="refused the ACL token") as info:
                await d.kv_get("x")
            assert "not-the-right" not in str(info.value)
        finally:
            await d.close()

    asyncio.run(go())
