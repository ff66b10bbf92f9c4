"""Local identity: users with argon2id passwords, and login rate limiting.

- ``passwords``: argon2id hashing, verification, re-hashing, and the dummy verification for unknown users;
- ``users``: ``SQLUserDirectory``, the ``oauth.service.UserDirectory`` backed by the ``users`` table, plus
  the operator's administration (``mcp-bastion users …``);
- ``ratelimit``: token buckets per username and per client address, with growing lockouts.
"""
