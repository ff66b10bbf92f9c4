"""The gateway's hop benchmark: `scripts/bench` (or `python -m bench`) runs it; see `bench.run`."""
