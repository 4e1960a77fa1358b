"""cx-stream benchmark suite: `python -m bench` runs every benchmark against Apache Kafka.

It writes docs/benchmarks.md (the figures, the machine, the command) and docs/benchmarks.json
(every raw run value). See bench/__main__.py for the options and docs/benchmarks.md for what
each benchmark measures.
"""
