"""The logger every entrypoint shares: JSON lines, one service name."""

from __future__ import annotations

from aws_lambda_powertools import Logger

# POWERTOOLS_SERVICE_NAME (set per function in template.yaml) overrides this.
logger = Logger(service="mailroom")
