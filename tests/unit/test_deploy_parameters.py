"""template.yaml's deploy parameters: placeholders cannot deploy, VPC applies to every function."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.template import CloudFormationLoader

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE: dict[str, Any] = yaml.load(
    (REPO_ROOT / "template.yaml").read_text(), Loader=CloudFormationLoader
)
PARAMETERS: dict[str, Any] = TEMPLATE["Parameters"]
SAMCONFIG = tomllib.loads((REPO_ROOT / "samconfig.toml").read_text())


def _overrides(environment: str) -> dict[str, str]:
    pairs = SAMCONFIG[environment]["deploy"]["parameters"]["parameter_overrides"]
    return dict(pair.split("=", 1) for pair in pairs)


def _allowed(name: str, value: str) -> bool:
    pattern = PARAMETERS[name].get("AllowedPattern")
    return pattern is None or re.fullmatch(pattern, value) is not None


@pytest.mark.parametrize("environment", ["default", "prod"])
def test_no_samconfig_placeholder_passes_its_parameters_pattern(environment: str) -> None:
    # GIVEN samconfig.toml's placeholder values (REPLACE_ME, example.internal hosts)
    placeholders = {
        name: value
        for name, value in _overrides(environment).items()
        if "REPLACE_ME" in value or "example.internal" in value
    }
    assert placeholders
    # WHEN each is checked against its AllowedPattern THEN every one is refused
    assert {name: value for name, value in placeholders.items() if _allowed(name, value)} == {}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DatabaseUrl", "postgresql+pg8000://mailroom:s3cret@db.internal:5432/mailroom"),
        ("DatabaseUrl", "secretsmanager:mailroom-prod/database-url"),
        ("RedisUrl", "ssm:/mailroom-prod/redis-url"),
        ("AdminTokenSha256", "a" * 64),
        ("SecretsEncryptionKeys", "secretsmanager:mailroom-prod/keyring"),
        ("AwsEndpointUrl", ""),
        ("AwsEndpointUrl", "http://host.docker.internal:4566"),
    ],
)
def test_real_values_and_secret_references_pass(name: str, value: str) -> None:
    assert _allowed(name, value)


def test_the_vpc_is_applied_to_every_function_through_globals() -> None:
    # GIVEN the Globals every function inherits
    vpc = TEMPLATE["Globals"]["Function"]["VpcConfig"]["Fn::If"]
    # THEN the VPC settings apply when subnets are given, and nothing otherwise
    assert vpc[0] == "InVpc"
    assert vpc[1] == {
        "SubnetIds": {"Ref": "SubnetIds"},
        "SecurityGroupIds": {"Ref": "SecurityGroupIds"},
    }
    assert vpc[2] == {"Ref": "AWS::NoValue"}
    # ...and no function replaces it with its own
    functions = [
        resource
        for resource in TEMPLATE["Resources"].values()
        if resource["Type"] == "AWS::Serverless::Function"
    ]
    assert all("VpcConfig" not in f["Properties"] for f in functions)


def test_every_function_may_read_the_stacks_secrets() -> None:
    # A secret given as a reference is read at every function's cold start.
    missing = [
        name
        for name, resource in TEMPLATE["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
        and {"Ref": "ReadStackSecretsPolicy"} not in resource["Properties"].get("Policies", [])
    ]
    assert missing == []
