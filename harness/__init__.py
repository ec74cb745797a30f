"""Private services and helpers shared by the tests and the benchmarks.

Processes of our own (a nats-server, a PostgreSQL cluster, scratch databases), free loopback
ports, waiting on a condition with a deadline, and the one percentile function. Nothing here
is part of the product: `controlplane` never imports it.
"""
