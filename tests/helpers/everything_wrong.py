"""Run the PyPI package ``mcp-server-everything-wrong`` (0.2.1, a deliberately vulnerable MCP server) as a
stdio child, on the SDK these tests use.

The package is written for mcp 1.x (``from mcp.server.fastmcp import FastMCP``; ``ServerNotification(root=...)``)
while the project pins mcp 2.x, where FastMCP is ``MCPServer`` and ``ServerNotification`` is a plain union.
Its ``server.py`` is imported unchanged behind a two-name shim, so every attack (the tools, their texts, the
rug pull on the first ``greet``) is the package's own code:

- ``mcp.server.fastmcp`` -> ``FastMCP`` (an ``MCPServer``) and ``Context`` (mcp 2's, which the tool decorator
  recognises by annotation);
- ``mcp.types.ServerNotification(root=n)`` -> ``n`` (v1's root model around a notification), only while the
  package's module is imported.

As under mcp 1.x, the server advertises ``tools: {"listChanged": false}`` in the handshake era (mcp 2 derives
the same from its default ``NotificationOptions``), and still sends ``notifications/tools/list_changed``.

    command = [sys.executable, "-I", str(EVERYTHING_WRONG)]   # an upstream's ``command``

``-I`` (isolated mode) keeps this folder (whose ``redis.py``, ``moto.py`` would shadow real packages) and
``PYTHON*`` variables off the child's path: the child sees exactly the environment its upstream declares.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path
from typing import Final

EVERYTHING_WRONG: Final = Path(__file__).resolve()
"""This file: run it (``python -I everything_wrong.py``) to start the server on stdin/stdout."""


def _install_shim() -> types.ModuleType:
    import mcp.types
    from mcp.server.mcpserver import Context, MCPServer

    fastmcp = types.ModuleType("mcp.server.fastmcp")
    fastmcp.FastMCP = MCPServer  # type: ignore[attr-defined]
    fastmcp.Context = Context  # type: ignore[attr-defined]
    sys.modules["mcp.server.fastmcp"] = fastmcp
    namespace = vars(mcp.types)
    union = namespace["ServerNotification"]

    def server_notification(root: object) -> object:
        return root

    namespace["ServerNotification"] = server_notification
    try:
        return importlib.import_module("mcp_server_everything_wrong.server")  # the import registers the tools
    finally:
        namespace["ServerNotification"] = union


def main() -> None:
    server = _install_shim()
    # The package's own entry point is ``asyncio.run(serve())`` around a synchronous ``serve()``: it raises
    # ValueError once the server has stopped. ``serve()`` alone is the server.
    server.serve()


if __name__ == "__main__":
    main()
