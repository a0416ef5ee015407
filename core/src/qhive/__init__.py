"""qhive: a task queue, scheduler and worker cluster built as a plugin framework.

Importing this package does no work: plugins are found and loaded only when
something asks for them (see :mod:`qhive.plugins` and :mod:`qhive.drivers`).
"""

__version__ = "0.1.0"
