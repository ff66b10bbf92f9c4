"""JSON-RPC 2.0 messages as the gateway sees them: bytes in, typed messages out, error objects back.

Sans-IO: nothing here reads a socket. See ``message`` for parsing and ``methods`` for the MCP method sets.
"""
