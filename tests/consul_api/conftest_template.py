# conftest.py for py-consul's own API tests, run against tests/consul_emulator.py.
# Copied next to the extracted tests by tests/consul_api/run_pyconsul_tests.py.
import asyncio
import importlib.util
import os
import threading

import pytest

_spec = importlib.util.spec_from_file_location("consul_emulator", os.environ["CONSUL_EMULATOR_PATH"])
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)


@pytest.fixture
def consul_port():
    started, box = threading.Event(), {}

    def serve():
        loop = asyncio.new_event_loop()
        box["address"] = loop.run_until_complete(_mod.ConsulEmulator().start())
        box["loop"] = loop
        started.set()
        loop.run_forever()

    threading.Thread(target=serve, daemon=True).start()
    assert started.wait(10)
    yield int(box["address"].split(":")[1]), "1.22.0"
    box["loop"].call_soon_threadsafe(box["loop"].stop)


@pytest.fixture
def consul_obj(consul_port):
    import consul

    port, version = consul_port
    return consul.Consul(port=port), version
