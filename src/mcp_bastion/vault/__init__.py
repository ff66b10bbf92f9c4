"""The vault: secrets at rest, sealed so that a copy of the disk or the database yields nothing usable.

- ``kek``: the key-encryption-key seam (``KeyEncryptionKeys``), the ``KEK`` value and ``MemoryKeys`` for tests;
- ``keyfile``: ``LocalKeyFile``, the default KEK backend (a 0600 file of KEK versions in the state directory);
- ``envelope``: ``Vault``, AES-256-GCM envelope encryption (a fresh data key per record, wrapped by a KEK,
  every blob bound to its owner and purpose); failures are the opaque ``InvalidCiphertext``;
- ``sealer``: ``VaultSealer``, the vault behind the authorization server's ``oauth.sealing.Sealer`` seam.

Remote KEK backends (OpenBao/Vault Transit, AWS KMS) implement ``KeyEncryptionKeys`` by unwrapping their KEK
versions up front and serving them from memory, so sealing and opening never wait on the network.
"""
