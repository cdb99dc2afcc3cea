"""The virtual network: a whole Dynamo deployment inside one test (see :doc:`/virtual-network`).

* :class:`VirtualNetwork`: listeners and connections on virtual ``host:port``
  addresses, with faults on the wire and a timeline; every trioplane client and
  server opened inside ``async with network:`` runs on it.
* :func:`open_virtual_deployment`: workers serving a handler on it, registered in
  a :class:`VirtualDiscovery`, and a factory of endpoint clients.
"""

from trioplane.testing.virtual._deployment import (
    VirtualDeployment,
    VirtualDiscovery,
    open_virtual_deployment,
)
from trioplane.testing.virtual._network import (
    Conditions,
    Fault,
    NetEvent,
    VirtualListener,
    VirtualNetwork,
    VirtualStream,
)

__all__ = [
    "Conditions",
    "Fault",
    "NetEvent",
    "VirtualDeployment",
    "VirtualDiscovery",
    "VirtualListener",
    "VirtualNetwork",
    "VirtualStream",
    "open_virtual_deployment",
]
