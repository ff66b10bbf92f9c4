"""The ``mcp-bastion`` command line: one module per command group, assembled in ``main``."""
