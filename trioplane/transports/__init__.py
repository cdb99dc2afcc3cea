"""Transports: one module per transport, each turning the ``wire`` codecs into Trio I/O."""

from trioplane.transports.tcp import TcpClient, TcpClientOptions, open_tcp_client, start_tcp_client

__all__ = ["TcpClient", "TcpClientOptions", "open_tcp_client", "start_tcp_client"]
