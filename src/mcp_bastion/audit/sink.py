"""Where audit records go: a JSON-lines file opened O_APPEND (one ``write`` per record, so concurrent
writers never interleave a line), or standard output, or memory for tests.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Protocol

import orjson

from mcp_bastion.jsonrpc.message import JSONObject


class AuditSink(Protocol):
    def emit(self, record: JSONObject) -> None: ...

    def close(self) -> None: ...


class FileSink:
    """Append-only JSON lines; the file is created 0600 (records name users and their actions)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def emit(self, record: JSONObject) -> None:
        os.write(self._fd, orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class StreamSink:
    def emit(self, record: JSONObject) -> None:
        sys.stdout.buffer.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        sys.stdout.buffer.flush()

    def close(self) -> None:
        return None


class MemorySink:
    """Keeps records in a list: for tests of the pure cores and the driver."""

    def __init__(self) -> None:
        self.records: list[JSONObject] = []

    def emit(self, record: JSONObject) -> None:
        self.records.append(record)

    def close(self) -> None:
        return None
