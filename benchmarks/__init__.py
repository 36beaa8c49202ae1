"""`make bench` (``python -m benchmarks.run``): timings and memory of the course, written to benchmarks/results.md."""
