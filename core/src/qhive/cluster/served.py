"""Drivers that live in the sentinel's process, served to its workers.

Workers take and save their own tasks, on their own connections. A broker that
other processes cannot reach (``Capabilities.shared`` false: the in-process
``memory`` broker of tests and demos, and its result store) is served instead
by the sentinel over a local socket (:mod:`multiprocessing.managers`); the
workers call it through proxies, and run the same code as with any broker.
"""

from __future__ import annotations

import os
import threading
from multiprocessing.managers import BaseManager
from typing import Any

#: Class attributes of drivers that the pipeline reads (proxies only forward calls).
_ATTRIBUTES = ("capabilities", "applies_save_limit", "queue")


class _Server(BaseManager):
    pass


class _Client(BaseManager):
    pass


_Client.register("driver")


class ServedDrivers:
    """The sentinel's ``drivers`` (``{"broker": ..., "result_store": ...}``), served
    from a thread of its process; pickled to workers, which :meth:`connect`."""

    def __init__(self, drivers: dict[str, Any]) -> None:
        self.authkey = os.urandom(32)
        self.attributes = {name: {a: getattr(d, a) for a in _ATTRIBUTES if hasattr(d, a)}
                           for name, d in drivers.items()}
        server_class = type("_DriverServer", (_Server,), {})
        server_class.register("driver", callable=drivers.__getitem__)
        server = server_class(authkey=self.authkey).get_server()
        self.address = server.address
        threading.Thread(target=server.serve_forever, name="qhive-served-drivers",
                         daemon=True).start()

    def __getstate__(self) -> dict[str, Any]:
        return {"authkey": self.authkey, "attributes": self.attributes, "address": self.address}

    def connect(self) -> dict[str, Any]:
        """Proxies of the served drivers, by name (in a worker)."""
        client = _Client(address=self.address, authkey=self.authkey)
        client.connect()
        return {name: _Remote(client.driver(name), attributes)
                for name, attributes in self.attributes.items()}


class _Remote:
    """A served driver as a worker sees it: its attributes, and calls to the sentinel."""

    def __init__(self, proxy: Any, attributes: dict[str, Any]) -> None:
        self._proxy = proxy
        self.__dict__.update(attributes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._proxy, name)

    def close(self) -> None:
        """The driver is the sentinel's: only the sentinel closes it."""
