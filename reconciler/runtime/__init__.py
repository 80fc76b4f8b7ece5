"""The runtime: the only layer that wires the store (``db``), the nodes and Docker together.

``runtime.controller`` runs one pass (load, plan, execute, record), ``runtime.executor`` applies
a plan to the nodes, ``runtime.daemon`` is ``reconciler run``: APScheduler, wakes and signals.
"""
