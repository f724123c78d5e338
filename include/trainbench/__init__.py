"""trainbench: training benchmarks of deep-learning frameworks across device sets."""

__version__ = "0.1.0"
