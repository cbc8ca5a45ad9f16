"""``make bench``: hubbub's benchmark suite (DESIGN.md, BENCHMARKS.md).

Three parts, each against real ``hubbub serve`` processes pinned to core 0
while the load generator runs on core 1:

- :mod:`benchmarks.fanout`: N WebSocket subscribers on one channel and an
  open-loop publisher at a fixed rate: deliveries/s, loss, latency from the
  intended send time, server CPU per delivery.
- :mod:`benchmarks.idle`: resident memory per idle TCP and WebSocket
  connection.
- :mod:`benchmarks.cluster`: the same fan-out through Redis with 1 and 3
  nodes against the single node in one sitting, Redis PUBLISH calls per
  publication (``INFO commandstats``), and publish throughput per node.

Run ``python -m benchmarks [fanout|idle|cluster] [--quick]``; figures are printed as a
table and written to ``benchmarks/results/latest.json``. Benchmarks print
numbers; they assert nothing.
"""
