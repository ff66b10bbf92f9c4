"""Tool integrity: what the gateway holds servers to after it first saw them (``pins``)."""
