"""compose.yml and the Dockerfile: one image, the roles hosting/ knows (issue 22).

The image itself cannot be built here (no Docker); these check what can be
checked without it, and tests/integration/test_hosting_roles.py runs the roles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hosting.roles import ROLES

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((REPO_ROOT / "compose.yml").read_text())


def test_mailrooms_services_share_one_image_and_run_known_roles() -> None:
    services = COMPOSE["services"]
    roles = {
        name: services[name]["environment"]["SERVICE_ROLE"]
        for name in ("api", "worker", "scheduler")
    }
    assert roles == {"api": "api", "worker": "worker", "scheduler": "scheduler"}
    assert set(roles.values()) <= set(ROLES)
    assert {services[name]["image"] for name in roles} == {"mailroom:local"}
    assert services["api"]["environment"]["SMTP_HOST"] == "mailpit"


def test_no_published_port_collides_with_a_hosts_postgres_or_redis() -> None:
    published = [
        str(port).rsplit(":", 2)[-2]
        for service in COMPOSE["services"].values()
        for port in service.get("ports", [])
    ]
    assert "5432" not in published
    assert "6379" not in published
    # ...and everything is published on the loopback address only
    assert all(
        str(port).startswith("127.0.0.1:")
        for service in COMPOSE["services"].values()
        for port in service.get("ports", [])
    )


def test_localstack_can_take_a_deploy_of_the_whole_template() -> None:
    localstack = COMPOSE["services"]["localstack"]
    services = set(localstack["environment"]["SERVICES"].split(","))
    assert {"cloudformation", "lambda", "sqs", "sns", "iam", "s3", "apigateway"} <= services
    assert "/var/run/docker.sock:/var/run/docker.sock" in localstack["volumes"]


def test_the_dockerfile_is_multi_stage_and_enters_through_the_role_switch() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert dockerfile.count("\nFROM ") + dockerfile.startswith("FROM ") >= 2
    assert 'ENTRYPOINT ["/var/task/hosting/entrypoint.sh"]' in dockerfile
    entrypoint = (REPO_ROOT / "hosting" / "entrypoint.sh").read_text()
    assert "exec python -m hosting" in entrypoint
    assert "exec /lambda-entrypoint.sh" in entrypoint
