"""The SAM template validates, builds, and puts every artifact where Lambda looks.

Runs the real SAM CLI through `.ci/sam.sh` (no Docker needed). `sam build`
pip-installs the DependenciesLayer from PyPI, so the first run takes about half
a minute; later runs reuse the cache under `.aws-sam/` and take a few seconds.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any, cast

import pytest
import yaml

from devstack.template import CloudFormationLoader

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = REPO_ROOT / "template.yaml"
SAM_WRAPPER = REPO_ROOT / ".ci" / "sam.sh"
SAM_BINARY = REPO_ROOT / ".venv-sam" / "bin" / "sam"

# Both under the git-ignored .aws-sam/, apart from the developer's own
# .aws-sam/build. The build dir is fixed rather than a pytest tmp_path because
# SAM keeps the source hashes that make `--cached` work in build.toml *beside*
# the build dir: a fresh temporary dir means a full rebuild every run.
TEST_ROOT = REPO_ROOT / ".aws-sam" / "integration-tests"
BUILD_DIR = TEST_ROOT / "build"
CACHE_DIR = TEST_ROOT / "cache"

SAM_TIMEOUT_SECONDS = 900
LAMBDA_LAYER_ROOT = PurePosixPath("/opt")

if not SAM_BINARY.exists():
    # Not a skip: `make test` installs the SAM CLI, so its absence is a broken setup.
    pytest.fail(f"SAM CLI not installed at {SAM_BINARY} (`make test` creates .venv-sam)")


def run_sam(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0"}
    return subprocess.run(
        [str(SAM_WRAPPER), *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=SAM_TIMEOUT_SECONDS,
        check=False,
    )


def describe(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    parsed = yaml.load(TEMPLATE.read_text(encoding="utf-8"), Loader=CloudFormationLoader)
    return cast(dict[str, Any], parsed)


@pytest.fixture(scope="module")
def build_dir() -> Path:
    """WHEN the template is built with `sam build --cached` into the test's build dir."""
    result = run_sam(
        "build",
        "--template-file",
        str(TEMPLATE),
        "--build-dir",
        str(BUILD_DIR),
        "--cache-dir",
        str(CACHE_DIR),
        "--cached",
        "--parallel",
    )
    if result.returncode != 0:
        pytest.fail(f"sam build failed:\n{describe(result)}")
    return BUILD_DIR


def resources_of_type(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {
        name: resource
        for name, resource in template["Resources"].items()
        if resource["Type"] == resource_type
    }


def built_path_for(build_dir: Path, layer: str, lambda_path: str) -> Path:
    """Where a path inside the Lambda sandbox (under /opt) sits in a built layer."""
    relative = PurePosixPath(lambda_path).relative_to(LAMBDA_LAYER_ROOT)
    return build_dir / layer / relative


def test_template_passes_sam_validate_lint() -> None:
    # GIVEN the repository's template.yaml
    # WHEN SAM validates it with cfn-lint
    result = run_sam("validate", "--lint", "--template-file", str(TEMPLATE))
    # THEN it reports no error and no warning
    assert result.returncode == 0, describe(result)


def test_mailroom_layer_holds_the_mailroom_package(build_dir: Path) -> None:
    # GIVEN a built MailroomLayer (Lambda adds /opt/python to sys.path)
    package = build_dir / "MailroomLayer" / "python" / "mailroom"
    # THEN the package from shared/mailroom is there, without local bytecode
    assert (package / "__init__.py").is_file()
    assert not list(package.rglob("__pycache__"))


def test_mailroom_layer_holds_the_templates_where_templates_dir_points(
    template: dict[str, Any], build_dir: Path
) -> None:
    # GIVEN the TEMPLATES_DIR every function gets, and the welcome template in templates/
    templates_dir = template["Globals"]["Function"]["Environment"]["Variables"]["TEMPLATES_DIR"]
    assert PurePosixPath(templates_dir).is_relative_to(LAMBDA_LAYER_ROOT)
    source = REPO_ROOT / "templates"
    welcome_files = sorted(p for p in (source / "welcome").rglob("*") if p.is_file())
    assert welcome_files, "templates/welcome/ holds no files"
    # WHEN we look at that path inside the built MailroomLayer
    built = built_path_for(build_dir, "MailroomLayer", templates_dir)
    # THEN every welcome file is there, byte for byte
    for source_file in welcome_files:
        built_file = built / source_file.relative_to(source)
        assert built_file.is_file(), f"{built_file} missing"
        assert built_file.read_bytes() == source_file.read_bytes()


def test_dependencies_layer_holds_third_party_packages_but_not_boto3(build_dir: Path) -> None:
    # GIVEN a built DependenciesLayer
    site = build_dir / "DependenciesLayer" / "python"
    # THEN the requirements are installed where Lambda imports from
    assert (site / "pydantic").is_dir()
    assert (site / "css_inline").is_dir()
    # AND boto3 is left to the Lambda runtime
    assert not (site / "boto3").exists()


def test_every_function_folder_holds_its_handler_module(
    template: dict[str, Any], build_dir: Path
) -> None:
    # GIVEN the template's functions (the five of the API and queue, the
    # scheduled reconciler, scheduler and sending-domain re-check, the inbound
    # function, the webhook dispatcher and tick, the batches routes and their
    # planner), each with Handler app.handler
    functions = resources_of_type(template, "AWS::Serverless::Function")
    assert set(functions) == {
        "SendFunction",
        "StatusFunction",
        "WebhooksFunction",
        "AdminFunction",
        "WorkerFunction",
        "ReconcilerFunction",
        "InboundFunction",
        "DomainChecksFunction",
        "WebhookDispatcherFunction",
        "WebhookTickFunction",
        # Issue 17: bulk batches' routes and their planner.
        "BatchesFunction",
        "PlannerFunction",
        "SchedulerFunction",
        "TrackingFunction",
        # Issue 21 item 3: the tracking hits' consumer.
        "TrackingIngestFunction",
        # Issue 21: the analytics roll-up and reputation check, every minute.
        "AnalyticsFunction",
    }
    assert {f["Properties"]["Handler"] for f in functions.values()} == {"app.handler"}
    # THEN each built function folder holds app.py
    missing = [name for name in functions if not (build_dir / name / "app.py").is_file()]
    assert not missing, f"no app.py in the built folder of: {missing}"


def test_queue_gives_up_only_after_the_app_has(template: dict[str, Any]) -> None:
    # GIVEN the send queue's redrive policy and the MAX_SEND_ATTEMPTS parameter
    queue = template["Resources"]["SendQueue"]["Properties"]
    max_receive_count = int(queue["RedrivePolicy"]["maxReceiveCount"])
    attempts = template["Parameters"]["MaxSendAttempts"]
    # THEN SQS moves a message to the DLQ only after more receives than the
    # app's attempts, for the default and for the highest allowed value
    assert max_receive_count > int(attempts["Default"])
    assert max_receive_count > int(attempts["MaxValue"])
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": ["SendDeadLetterQueue", "Arn"]
    }
    # AND the functions are told that same limit (the worker trusts it
    # instead of asking SQS)
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert int(variables["SEND_QUEUE_MAX_RECEIVE_COUNT"]) == max_receive_count


def test_queue_visibility_timeout_covers_the_worker_timeout(template: dict[str, Any]) -> None:
    # GIVEN the worker, consuming SendQueue, and the queue
    worker = template["Resources"]["WorkerFunction"]["Properties"]
    worker_timeout = int(worker.get("Timeout", template["Globals"]["Function"]["Timeout"]))
    queue = template["Resources"]["SendQueue"]["Properties"]
    assert worker["Events"]["SendQueue"]["Properties"]["Queue"] == {
        "Fn::GetAtt": ["SendQueue", "Arn"]
    }
    # THEN a message stays invisible for at least as long as the worker may run
    # (AWS refuses the event source mapping otherwise)
    assert int(queue["VisibilityTimeout"]) >= worker_timeout


def test_api_gateway_refusals_use_the_error_shape(template: dict[str, Any]) -> None:
    # GIVEN the template's REST API
    api = template["Resources"]["MailroomApi"]["Properties"]
    responses = api["GatewayResponses"]
    # THEN an unknown path is 404 route_not_found, as the local runner answers
    missing = responses["MISSING_AUTHENTICATION_TOKEN"]
    assert missing["StatusCode"] == 404
    assert '"code": "route_not_found"' in missing["ResponseTemplates"]["application/json"]
    for name in ("DEFAULT_4XX", "DEFAULT_5XX"):
        assert '"error": {"code":' in responses[name]["ResponseTemplates"]["application/json"]
