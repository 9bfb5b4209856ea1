"""The local runner: Mailroom's functions, API Gateway, SQS and an SMTP sink in one process.

``python -m devstack`` from the repo root reads ``template.yaml`` and serves the
same handlers the deployed stack runs, with moto standing in for SQS and an SMTP
sink that keeps every message as an ``.eml`` file. PostgreSQL and Redis are the
real ones.
"""
