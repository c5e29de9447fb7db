import asyncio
import json

import pytest

from controlplane.leader_client import LeaderClient
from controlplane.state.model import CommandError


class Recorded(LeaderClient):
    """Answers as a leader would, and keeps what was proposed."""

    def __init__(self) -> None:
        super().__init__()
        self.proposed: list[dict] = []

    async def _propose_once(self, data, timeout):
        command = json.loads(data)
        self.proposed.append(command)
        if command["type"] == "open_session":
            return "ok", {"ok": True, "session": "s1"}
        return "ok", {"ok": True, "version": 1}

    async def _query_once(self, name, args, timeout):
        raise AssertionError("not asked")

    def _leader_lost(self):
        pass


BAD = {"type": "update_uav", "uav": "u1", "battery": "full"}


def test_a_bad_command_is_refused_before_a_session_is_opened_and_after():
    async def go():
        client = Recorded()
        with pytest.raises(CommandError, match="battery"):
            await client.command(BAD)
        assert client.proposed == []  # no session was opened for it
        assert (await client.command({"type": "update_uav", "uav": "u1", "battery": 50}))["ok"]
        assert [c["type"] for c in client.proposed] == ["open_session", "update_uav"]
        with pytest.raises(CommandError, match="battery"):
            await client.command(BAD)
        assert len(client.proposed) == 2  # refused here, nothing sent

    asyncio.run(go())
