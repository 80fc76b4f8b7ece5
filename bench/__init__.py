"""Benchmarks of reconciler side by side with the tools people would use instead (issue 5).

``python -m bench`` (``make bench``) starts its own sandboxed dockerd engines, measures reconciler
against the raw docker SDK thread pool, swarm mode and docker-compose on the same engines in the
same run, and writes ``bench/results/latest.{md,json}`` and ``convergence.png``.

Modules, one concern each:

* ``cli`` parses the flags and runs the selected measurements, always cleaning up;
* ``fleet`` owns the sandbox engines, swarm mode on them and the cleanup between measurements;
* ``daemon`` runs ``reconciler run`` as a subprocess against a SQLite or PostgreSQL database;
* ``contenders`` drives the raw SDK, swarm mode and docker-compose;
* ``convergence``, ``latency``, ``drift``, ``steady``, ``where`` are the five measurements;
* ``stats``, ``machine`` (facts and /proc CPU accounting), ``report`` and ``floors`` present them.

``bench_planner`` (the no-op planner CPU at 1,000/10,000 rows) also runs on its own.
"""
