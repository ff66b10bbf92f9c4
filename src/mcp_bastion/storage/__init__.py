"""Storage: the SQL database behind users and the authorization server (SQLite by default, PostgreSQL for
several replicas), its schema and migrations.

- ``db``: the engine, transactions and the error boundary (a database that cannot be reached raises
  ``errors.Unavailable``: the gate fails closed);
- ``models``: the tables, one declarative class each;
- ``migrate`` + ``migrations/``: alembic scripts shipped inside the package, run by ``Database.upgrade()``;
- ``oauthstore``: ``SQLOAuthStore``, the SQL implementation of ``oauth.store.OAuthStore``; ``records``
  maps its rows to the store's records;
- ``linkstore``: ``SQLLinkStore``, pending upstream account links (``delegation.oauthlink.LinkStore``).
"""
