"""``make bench``: hubbub's benchmark suite (DESIGN.md, BENCHMARKS.md).

Two parts, each against a real ``hubbub serve`` process pinned to core 0
while the load generator runs on core 1:

- :mod:`benchmarks.fanout`: N WebSocket subscribers on one channel and an
  open-loop publisher at a fixed rate: deliveries/s, loss, latency from the
  intended send time, server CPU per delivery.
- :mod:`benchmarks.idle`: resident memory per idle TCP and WebSocket
  connection.

Run ``python -m benchmarks [fanout|idle] [--quick]``; figures are printed as a
table and written to ``benchmarks/results/latest.json``. Benchmarks print
numbers; they assert nothing.
"""
