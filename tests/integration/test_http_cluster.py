"""Three RaftNodes talking real HTTP on 127.0.0.1: election, writes, leader loss."""

import asyncio

from tests.node_cluster import Cluster, wait_for


def test_http_cluster_survives_losing_its_leader():
    async def go():
        c = Cluster(3, http=True)
        for i in c.ids:
            await c.start(i)
        try:
            old = await c.leader()
            for i in range(30):
                await old.propose(b"w%d=%d" % (i, i))
            await c.stop(old.id)
            new = await c.leader()
            assert new.id != old.id
            await new.propose(b"after=1")
            assert all(f"w{i}" in c.kvs[new.id].data for i in range(30))
            await c.start(old.id)
            await wait_for(lambda: c.kvs[old.id].data.get("after") == "1")
            stats = c.clients[new.id].get_statistics()
            assert stats["total_requests"] > 0 and stats["success_rate"] > 0.5
        finally:
            await c.close()

    asyncio.run(asyncio.wait_for(go(), 60))
