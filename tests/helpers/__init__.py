"""Reusable test helpers: child processes (`procs`)."""
