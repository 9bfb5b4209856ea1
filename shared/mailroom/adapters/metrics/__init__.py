"""Operator metrics: one facade (base.Metrics), a backend per place Mailroom runs.

``emf.EmfMetrics`` in Lambda (CloudWatch Embedded Metric Format, through
Powertools), ``prometheus.PrometheusMetrics`` in the local runner and the
container roles (scraped at ``/metrics``), ``base.NoMetrics`` when off.
"""
