"""seqwatch core: framework-free data, model, training, scoring and metrics."""

__version__ = "0.1.0"
