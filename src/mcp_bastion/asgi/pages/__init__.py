"""The login and consent pages of the built-in authorization server.

``routes`` (the Starlette routes and the flow), ``federated`` ("Sign in with <IdP>": login through an
external OpenID Provider), ``csrf`` (keyed MACs and CSRF tokens), ``session`` (the signed login-session
cookie), ``statecookie`` (the encrypted federated-login state cookie), ``forms`` (capped form parsing),
``limiter`` (the login rate-limit seam), ``render`` (templates and security headers); ``templates/`` holds
the Jinja2 pages and the stylesheet.
"""

from mcp_bastion.asgi.pages.limiter import LoginLimiter, MemoryLoginLimiter
from mcp_bastion.asgi.pages.routes import page_routes

__all__ = ["LoginLimiter", "MemoryLoginLimiter", "page_routes"]
