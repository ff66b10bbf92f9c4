"""Audit: the record schema (``record``) and where records go (``sink``). Every exchange ends in exactly one."""
