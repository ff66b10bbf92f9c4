"""TLS for both edges of the gateway.

- ``certs``: the local CA and server certificate made in the state directory when none is configured.
- ``context``: the listener's ``SSLContext`` (optional mTLS) and the client ``SSLContext`` for upstream
  MCP servers; each is built once at startup.
- ``peercert``: the TLS facts of a connection as the app sees them (``scope["extensions"]["tls"]``,
  ``TLSInfo``) and ``peer_identity``, the principal a client certificate names.
- ``headguard``: the request-head deadline (slowloris) and size limit uvicorn lacks.
- ``h11_protocol``, ``httptools_protocol``: uvicorn protocol subclasses that apply the two above.
- ``server``: ``make_uvicorn_config``, the one place that wires all of this into uvicorn.

Nothing is imported here, so ``import mcp_bastion.tls.context`` does not pull in uvicorn.
"""
