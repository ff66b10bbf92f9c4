"""Tests of mcp_bastion.sandbox."""
