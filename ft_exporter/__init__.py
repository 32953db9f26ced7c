"""ft-exporter: Prometheus metrics for Model Studio (DashScope) fine-tune jobs."""

__version__ = "0.1.0"
