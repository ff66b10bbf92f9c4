"""Demo MCP servers that the gateway is shown and measured in front of.

- `customers`: a small in-memory CRM with read, write, destructive and long-running tools, a resource
  and a prompt — the upstream of the demo and of the end-to-end tests;
- `echo`: one trivial tool, the upstream of the benchmarks (direct vs through the gateway);
- `serve`: the command line both share (stdio, or Streamable HTTP announcing `READY <url>`).
"""
