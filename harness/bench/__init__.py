"""Benchmarks that print figures and assert nothing: the decode engine (`bench-engine`) and the runner's
instrumentation (`bench-overhead`)."""
