"""Pure detectors over text and JSON values, producing findings; no I/O at call time.

Every detector here is built once at startup (patterns compiled, model weights read from package data)
and is then an immutable object whose methods are pure functions of their input: the same text always
gives the same findings, there is no hidden state between calls, and nothing is logged or sent anywhere.
Findings name a category and a short reason and never echo long stretches of the scanned text, so they
are safe to put in audit records. Training code (``scan.training``) is never imported at runtime.
"""
