"""The harness behind ``convergent demo`` and ``convergent drill``: workload, processes,
invariant checks, live progress and the final report."""
