"""The node half of reconciler: the observed side of every pass.

After classic Docker Swarm's cluster/node code, split by concern:

* ``health``  - the pure health state machine (pending / healthy / unhealthy, capped backoff);
* ``monitor`` - one event-stream thread per node: reconnect with backoff and ``since=``,
  inactivity watchdog, stoppable at once;
* ``node``    - one engine: connect, specs, incremental container and image refresh, health,
  recovery, :meth:`node.Node.snapshot` for the planner;
* ``cluster`` - follows the ``nodes`` table: one ``Node`` per row, SQL writes of health, engine
  facts and the observed containers and images.

Each node does its I/O on its own threads, so one hung engine never delays another's refresh.
"""
