"""Reaching a group deployed as Ray actors, from the client side: the actors' names, the live
replicas of a group, the one that leads, and calls that give up on a replica that stops
leading. No replica code is imported here (the SDK uses this; actors.py is the server side).
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray

from controlplane.raft import Role

NAMESPACE = "uav-control-plane"


def actor_name(group: str, replica: int) -> str:
    return f"raft-{group}-{replica}"


def group_replicas(group: str) -> dict[int, Any]:
    """The live replica actors of a group, by replica id (ids need not be contiguous: a
    replaced member's id is gone for good)."""
    prefix = actor_name(group, 0)[:-1]
    found: dict[int, Any] = {}
    for entry in ray.util.list_named_actors(all_namespaces=True):
        name = entry["name"] if isinstance(entry, dict) else entry
        namespace = entry.get("namespace") if isinstance(entry, dict) else NAMESPACE
        if namespace != NAMESPACE or not name.startswith(prefix) or not name[len(prefix) :].isdigit():
            continue
        try:
            found[int(name[len(prefix) :])] = ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:  # died between listing and lookup
            continue
    return found


# How often a slow call to the leader checks that the replica still leads (seconds).
LEADER_CHECK_INTERVAL = 0.2
# How often find_leader asks again while no replica claims to lead (seconds).
ELECTION_POLL = 0.1


async def answer_while_leading(handle: Any, ref: Any) -> Any:
    """The answer of a call to a replica; but if the replica stops answering status or stops
    leading while we wait, give up on it (TimeoutError: the caller retries elsewhere, which
    is safe for commands carrying (client, seq) and for telemetry, whose repeats are dropped
    as duplicates). Ray takes ~2 s to fail a call to a killed actor; this takes ~0.3 s."""
    call = asyncio.ensure_future(ref)
    while True:
        done, _ = await asyncio.wait({call}, timeout=LEADER_CHECK_INTERVAL)
        if done:
            return call.result()
        try:
            status = await asyncio.wait_for(handle.status.remote(), LEADER_CHECK_INTERVAL)
        except (ray.exceptions.RayError, TimeoutError):
            status = None
        if status is None or status["role"] != Role.LEADER.value:
            call.cancel()
            raise TimeoutError("the replica stopped leading while the call was in flight")


async def find_leader(handles: dict[int, Any], timeout: float = 15.0, *, ask_timeout: float = 0.5) -> int:
    """A replica that says it leads; waits for one. Answers as soon as the first claim
    arrives: a dead or restarting replica (no answer within `ask_timeout`) costs nothing
    then, and a stale claim only costs the caller one NotLeader answer. While no one leads
    (an election), it asks again every ~0.1 s without waiting for a silent replica."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        started = loop.time()
        pending = {asyncio.ensure_future(asyncio.wait_for(h.status.remote(), ask_timeout)) for h in handles.values()}
        answered = 0
        try:
            while pending:
                wait = ask_timeout if not answered else max(0.0, started + ELECTION_POLL - loop.time())
                done, pending = await asyncio.wait(pending, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    break  # the others answered "not me" and these stay silent: ask everyone again
                for ask in done:
                    if ask.cancelled() or ask.exception() is not None:  # dead, restarting, slow
                        continue
                    answered += 1
                    status = ask.result()
                    if status["role"] == Role.LEADER.value:
                        return int(status["replica"])
        finally:
            for ask in pending:
                ask.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.sleep(max(0.0, started + ELECTION_POLL - loop.time()))
    raise TimeoutError(f"no leader among {sorted(handles)} within {timeout}s")


def on_station(actor_class: Any, name: str, station: str, **options: Any) -> Any:
    """A named, detached, always-restarted actor pinned to one station by its resource
    (0.01 CPU: Ray ignores placement hints for actors asking for none)."""
    return actor_class.options(
        name=name,
        namespace=NAMESPACE,
        lifetime="detached",
        max_restarts=-1,
        num_cpus=0.01,
        resources={f"station:{station}": 0.01},
        get_if_exists=True,
        **options,
    )
