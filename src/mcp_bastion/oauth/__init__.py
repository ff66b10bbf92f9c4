"""OAuth 2.1 for the gateway.

The resource-server side lives here now: ``bearer`` (RFC 6750 header parsing and challenges), ``jwks``
(trusted public keys, RFC 7517), ``access_token`` (JWT access-token verification, RFC 9068 / RFC 8707),
``metadata`` (RFC 9728 protected-resource metadata) and ``localissuer`` (a small ES256 signer for the
demo and tests). The authorization-server modules join this package later, one module per spec concern.
"""
