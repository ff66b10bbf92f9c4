"""mcp-bastion: a security gateway for the Model Context Protocol.

See ``app`` for how the pieces are composed and ``pipeline`` for the gate every message passes.
"""

__version__ = "0.1.0"
