"""``python -m mcp_bastion`` is the ``mcp-bastion`` command."""

from mcp_bastion.cli.main import main

main()
