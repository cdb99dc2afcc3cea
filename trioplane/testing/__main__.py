"""``python -m trioplane.testing``: run the TCP test worker alone (for benchmarks)."""

from trioplane.testing.worker import main

main()
