"""The gate: the stages every MCP message passes, in the one order declared here.

ADMISSION_STAGES run once per HTTP request; REQUEST_STAGES once per JSON-RPC message (the last one
forwards it); RESPONSE_STAGES on every message the upstream sends back. ``stage.Gate`` is the driver.
``app.build_gate`` instantiates each class with its own settings, in this order.
"""

from mcp_bastion.pipeline.authenticate import Authenticate
from mcp_bastion.pipeline.authorize import Authorize
from mcp_bastion.pipeline.filter import FilterLists
from mcp_bastion.pipeline.forward import Forward
from mcp_bastion.pipeline.inspect import InspectResults
from mcp_bastion.pipeline.parse import Parse
from mcp_bastion.pipeline.reply import CheckReply
from mcp_bastion.pipeline.session import Sessions
from mcp_bastion.pipeline.throttle import Throttle
from mcp_bastion.pipeline.transport import Transport

ADMISSION_STAGES = (Transport, Authenticate, Parse)
REQUEST_STAGES = (Sessions, Throttle, Authorize, Forward)
RESPONSE_STAGES = (CheckReply, FilterLists, InspectResults)
