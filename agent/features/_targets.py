"""The configured serial and network transports as the drivers' targets.

The one place that turns a :class:`~agent.config.SerialTransport` or a
:class:`~agent.config.NetworkTransport` into where a driver connects
(:mod:`drivers.transport`): printers, LED buses, keypad buses and ID card readers alike.
"""

from __future__ import annotations

from agent.config import NetworkTransport, SerialTransport
from drivers.transport import LineTarget, SerialTarget, TcpTarget


def line_target(transport: SerialTransport | NetworkTransport) -> LineTarget:
    """The driver's target for a configured serial or network transport."""
    if isinstance(transport, NetworkTransport):
        return TcpTarget(transport.host, transport.port, transport.timeout_s)
    return SerialTarget(
        transport.port,
        transport.baudrate,
        transport.bytesize,
        transport.parity,
        transport.stopbits,
    )
