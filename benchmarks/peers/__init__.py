"""Peer implementations of the benchmark network. Each is an optional extra (``pip install -e .[bench]``);
importing one whose library is missing raises ImportError, which the harness reports."""
