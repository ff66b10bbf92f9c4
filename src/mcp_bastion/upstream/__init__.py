"""Connections from the gateway to the real MCP servers: remote over HTTP, local over stdio.

``base`` holds the seam (``Upstream``, ``Channel``, ``Reply``); the pipeline only ever sees that seam.
"""
