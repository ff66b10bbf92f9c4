"""Calling upstreams as the user: each upstream request carries the end user's own credential.

``store`` keeps per-user upstream secrets sealed by the vault; ``static`` turns them (or an explicitly
named shared service account) into the request header. The downstream token never goes upstream: the
gateway forwards neither the client's ``Authorization`` nor its cookies (``pipeline.forward``), and an
upstream without ``auth`` configured gets no credential at all.
"""
