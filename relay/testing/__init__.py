"""What the tests and benchmarks share: real bundles to send, and the real
deployment (two mosquittos bridged over a simulated thin link, the daemons as
processes) to send them through. Not used by the relay itself."""
