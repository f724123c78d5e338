"""Orchestrations: what the DAGs and the CLI run, each a module of plain functions over the floors below (vocabulary,
frameworks, measure, store, checks, reports): the benchmark run's steps (`pipeline`) and its per-case `harness`, the
before/after measurement of an environment change, the environment watch, the host doctor, the GPU acceptance
check and the alerts."""
