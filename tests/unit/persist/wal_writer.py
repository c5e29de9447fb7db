"""Child process for the kill-mid-write test: appends forever, printing each synced index."""

import sys
from pathlib import Path

from controlplane.persist import FileLogStore
from controlplane.raft.messages import Entry

store = FileLogStore(Path(sys.argv[1]), segment_bytes=64 * 1024)
index = store.last_index()
while True:
    batch = [Entry(1, index + i + 1, b"payload-%d" % (index + i + 1) * 20) for i in range(50)]
    store.append(batch)
    store.sync()
    index += len(batch)
    print(index, flush=True)
