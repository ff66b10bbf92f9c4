"""Tests of mcp_bastion.upstream."""
