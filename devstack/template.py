"""What the runner takes from template.yaml: functions, their events, the queues.

Only the parts a local run needs are read. Intrinsic functions are resolved as
far as the runner can (parameter defaults, pseudo parameters, the queues it
creates); anything else is left for the runner to supply itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

# What Lambda and SAM assume when the template says nothing.
LAMBDA_DEFAULT_TIMEOUT_SECONDS = 3
LAMBDA_DEFAULT_MEMORY_MB = 128
SQS_DEFAULT_BATCH_SIZE = 10
IMPLICIT_API_STAGE = "Prod"
LOCAL_ACCOUNT_ID = "123456789012"  # moto's default account

# CloudFormation property -> SQS CreateQueue attribute, for plain values only.
_QUEUE_ATTRIBUTES = {
    "DelaySeconds": "DelaySeconds",
    "MaximumMessageSize": "MaximumMessageSize",
    "MessageRetentionPeriod": "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds": "ReceiveMessageWaitTimeSeconds",
    "VisibilityTimeout": "VisibilityTimeout",
}
_SUB_VARIABLE = re.compile(r"\$\{([^}!][^}]*)\}")


class TemplateError(Exception):
    """The template cannot be run locally; the message says where and why."""


class CloudFormationLoader(yaml.SafeLoader):
    """A safe loader that turns CloudFormation short tags (!Ref, !GetAtt, !Sub...) into dicts."""


def _construct_intrinsic(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> Any:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:  # pragma: no cover - PyYAML has no other node kinds
        raise TemplateError(f"unexpected YAML node for !{tag_suffix}")
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{tag_suffix}": value}


CloudFormationLoader.add_multi_constructor("!", _construct_intrinsic)


@dataclass(frozen=True, slots=True)
class ApiRoute:
    """One ``Type: Api`` event: a REST API resource path and method."""

    path: str  # as written in the template, e.g. /v1/messages/{id}
    method: str  # upper case; ANY matches every method
    event_name: str


@dataclass(frozen=True, slots=True)
class SqsTrigger:
    """One ``Type: SQS`` event: the queue a function drains and how."""

    event_name: str
    queue: str  # logical id of the queue resource
    batch_size: int
    batching_window_seconds: int
    report_batch_item_failures: bool
    enabled: bool
    # ScalingConfig.MaximumConcurrency: the local runner polls a function's
    # queues highest first (issue 20's priority bands); None when unset.
    maximum_concurrency: int | None = None


@dataclass(frozen=True, slots=True)
class ScheduleTrigger:
    """One ``Type: Schedule`` event: an EventBridge rate, run locally on the same period."""

    event_name: str
    expression: str  # as written, e.g. rate(1 minute)
    period_seconds: int
    enabled: bool


RATE_UNITS = {"minute": 60, "minutes": 60, "hour": 3600, "hours": 3600, "day": 86400, "days": 86400}


def _maximum_concurrency(properties: Mapping[str, Any], event_name: str) -> int | None:
    scaling = properties.get("ScalingConfig")
    if not isinstance(scaling, Mapping) or "MaximumConcurrency" not in scaling:
        return None
    value = scaling["MaximumConcurrency"]
    if not isinstance(value, int) or not 2 <= value <= 1000:
        raise TemplateError(f"{event_name}: ScalingConfig.MaximumConcurrency must be 2-1000")
    return value


def rate_seconds(expression: str) -> int | None:
    """``rate(5 minutes)`` in seconds; None for cron() and anything else."""
    match = re.fullmatch(r"rate\(\s*(\d+)\s+([a-z]+)\s*\)", expression.strip())
    if match is None or match.group(2) not in RATE_UNITS:
        return None
    return int(match.group(1)) * RATE_UNITS[match.group(2)]


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    logical_id: str
    code_uri: Path
    handler: str
    runtime: str
    timeout_seconds: int
    memory_mb: int
    routes: tuple[ApiRoute, ...]
    sqs_triggers: tuple[SqsTrigger, ...]
    schedules: tuple[ScheduleTrigger, ...] = ()
    # The function's own Environment.Variables, intrinsics unresolved (the
    # runner shares one process and uses Globals; `make sam-env` needs both).
    environment: dict[str, Any] = field(default_factory=dict)
    # Names of its non-Api, non-SQS, non-Schedule events (SNS...), for events/.
    other_event_types: tuple[str, ...] = ()

    @property
    def event_folder(self) -> str:
        """events/<this>/: the function's folder name, as in functions/<name>/."""
        return self.code_uri.name

    @property
    def handler_file(self) -> Path:
        module, _, _ = self.handler.rpartition(".")
        return self.code_uri / PurePosixPath(module.replace(".", "/") + ".py")

    @property
    def handler_name(self) -> str:
        return self.handler.rpartition(".")[2]


@dataclass(frozen=True, slots=True)
class QueueSpec:
    logical_id: str
    name: str
    # CreateQueue attributes, RedrivePolicy excepted: it needs the DLQ's ARN,
    # which exists only once that queue does.
    attributes: dict[str, str]
    dead_letter_queue: str | None = None
    max_receive_count: int | None = None

    @property
    def visibility_timeout_seconds(self) -> int:
        return int(self.attributes.get("VisibilityTimeout", "30"))


@dataclass(frozen=True, slots=True)
class StackSpec:
    functions: tuple[FunctionSpec, ...]
    queues: dict[str, QueueSpec]
    stage: str
    # Globals.Function.Environment.Variables, intrinsics unresolved. Function
    # level variables are not kept: every function shares this one process.
    environment: dict[str, Any]
    intrinsics: Intrinsics
    notes: tuple[str, ...] = ()
    # AWS::S3::Bucket logical id -> the bucket name the runner creates.
    buckets: dict[str, str] = field(default_factory=dict)

    @property
    def routes(self) -> list[tuple[FunctionSpec, ApiRoute]]:
        return [(function, route) for function in self.functions for route in function.routes]


@dataclass
class Intrinsics:
    """Resolves the intrinsic functions a local run can know the value of."""

    refs: dict[str, str] = field(default_factory=dict)
    attributes: dict[tuple[str, str], str] = field(default_factory=dict)

    def resolve(self, value: Any) -> str | None:
        """The value as a string, or None if it depends on something unknown here."""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str | int | float):
            return str(value)
        if not isinstance(value, Mapping) or len(value) != 1:
            return None
        (function, argument), *_ = value.items()
        if function == "Ref" and isinstance(argument, str):
            return self.refs.get(argument)
        if function == "Fn::GetAtt" and isinstance(argument, list) and len(argument) == 2:
            return self.attributes.get((str(argument[0]), str(argument[1])))
        if function == "Fn::Sub":
            return self._substitute(argument)
        return None

    def _substitute(self, argument: Any) -> str | None:
        if isinstance(argument, str):
            text, variables = argument, {}
        elif isinstance(argument, list) and len(argument) == 2 and isinstance(argument[0], str):
            text, variables = argument[0], dict(argument[1] or {})
        else:
            return None
        unresolved = False

        def replace(match: re.Match[str]) -> str:
            nonlocal unresolved
            name = match.group(1)
            if name in variables:
                resolved = self.resolve(variables[name])
            elif "." in name:
                resource, attribute = name.split(".", 1)
                resolved = self.attributes.get((resource, attribute))
            else:
                resolved = self.refs.get(name)
            if resolved is None:
                unresolved = True
                return ""
            return resolved

        result = _SUB_VARIABLE.sub(replace, text).replace("${!", "${")
        return None if unresolved else result


def load_stack(
    path: Path, *, stack_name: str, region: str, account_id: str = LOCAL_ACCOUNT_ID
) -> StackSpec:
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=CloudFormationLoader)  # noqa: S506 - a SafeLoader subclass
    except OSError as error:
        raise TemplateError(f"cannot read {path}: {error}") from error
    except yaml.YAMLError as error:
        raise TemplateError(f"{path} is not valid YAML: {error}") from error
    if not isinstance(document, dict) or not isinstance(document.get("Resources"), dict):
        raise TemplateError(f"{path} has no Resources section")
    return _parse(
        document, root=path.parent, stack_name=stack_name, region=region, account=account_id
    )


def _parse(
    document: dict[str, Any], *, root: Path, stack_name: str, region: str, account: str
) -> StackSpec:
    intrinsics = Intrinsics(
        refs={
            "AWS::StackName": stack_name,
            "AWS::Region": region,
            "AWS::AccountId": account,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
        }
    )
    for name, parameter in (document.get("Parameters") or {}).items():
        if isinstance(parameter, dict) and "Default" in parameter:
            default = intrinsics.resolve(parameter["Default"])
            if default is not None:
                intrinsics.refs[name] = default

    resources: dict[str, Any] = document["Resources"]
    globals_function: dict[str, Any] = (document.get("Globals") or {}).get("Function") or {}
    notes: list[str] = []

    queues = {
        logical_id: _queue(logical_id, resource.get("Properties") or {}, intrinsics, stack_name)
        for logical_id, resource in resources.items()
        if isinstance(resource, dict) and resource.get("Type") == "AWS::SQS::Queue"
    }
    # Buckets are known by name before they exist: !Ref of one resolves at once.
    buckets = {
        logical_id: _bucket_name(
            logical_id, resource.get("Properties") or {}, intrinsics, stack_name
        )
        for logical_id, resource in resources.items()
        if isinstance(resource, dict) and resource.get("Type") == "AWS::S3::Bucket"
    }
    intrinsics.refs.update(buckets)
    functions = tuple(
        _function(
            logical_id,
            resource.get("Properties") or {},
            globals_function,
            root=root,
            intrinsics=intrinsics,
            notes=notes,
        )
        for logical_id, resource in resources.items()
        if isinstance(resource, dict) and resource.get("Type") == "AWS::Serverless::Function"
    )
    for function in functions:
        for trigger in function.sqs_triggers:
            if trigger.queue not in queues:
                raise TemplateError(
                    f"{function.logical_id}.{trigger.event_name}: queue {trigger.queue!r} "
                    "is not an AWS::SQS::Queue of this template"
                )

    stages = [
        intrinsics.resolve((resource.get("Properties") or {}).get("StageName"))
        for resource in resources.values()
        if isinstance(resource, dict) and resource.get("Type") == "AWS::Serverless::Api"
    ]
    stage = next((name for name in stages if name), IMPLICIT_API_STAGE)

    environment = dict((globals_function.get("Environment") or {}).get("Variables") or {})
    return StackSpec(
        functions=functions,
        queues=queues,
        stage=stage,
        environment=environment,
        intrinsics=intrinsics,
        notes=tuple(notes),
        buckets=buckets,
    )


def _bucket_name(
    logical_id: str, properties: dict[str, Any], intrinsics: Intrinsics, stack_name: str
) -> str:
    """The template's BucketName, else what CloudFormation makes of the ids (no random suffix)."""
    if "BucketName" in properties:
        name = intrinsics.resolve(properties["BucketName"])
        if name is None:
            raise TemplateError(f"{logical_id}.BucketName: cannot resolve it")
        return name
    return re.sub(r"[^a-z0-9-]", "-", f"{stack_name}-{logical_id}".lower())[:63].strip("-")


def _queue(
    logical_id: str, properties: dict[str, Any], intrinsics: Intrinsics, stack_name: str
) -> QueueSpec:
    if properties.get("FifoQueue"):
        raise TemplateError(f"{logical_id}: FIFO queues are not supported by the local runner")
    name = intrinsics.resolve(properties.get("QueueName")) if "QueueName" in properties else None
    attributes: dict[str, str] = {}
    for cfn_name, sqs_name in _QUEUE_ATTRIBUTES.items():
        if cfn_name in properties:
            value = intrinsics.resolve(properties[cfn_name])
            if value is None:
                raise TemplateError(
                    f"{logical_id}.{cfn_name}: cannot resolve {properties[cfn_name]!r}"
                )
            attributes[sqs_name] = value
    dead_letter_queue: str | None = None
    max_receive_count: int | None = None
    redrive = properties.get("RedrivePolicy")
    if redrive is not None:
        if not isinstance(redrive, dict):
            raise TemplateError(f"{logical_id}.RedrivePolicy must be a mapping")
        dead_letter_queue = _logical_id_of(redrive.get("deadLetterTargetArn"))
        if dead_letter_queue is None:
            raise TemplateError(
                f"{logical_id}.RedrivePolicy.deadLetterTargetArn must be !GetAtt <Queue>.Arn"
            )
        max_receive_count = int(redrive.get("maxReceiveCount", 10))
    return QueueSpec(
        logical_id=logical_id,
        # What CloudFormation does without a QueueName, minus the random suffix.
        name=name or f"{stack_name}-{logical_id}",
        attributes=attributes,
        dead_letter_queue=dead_letter_queue,
        max_receive_count=max_receive_count,
    )


def _function(
    logical_id: str,
    properties: dict[str, Any],
    globals_function: dict[str, Any],
    *,
    root: Path,
    intrinsics: Intrinsics,
    notes: list[str],
) -> FunctionSpec:
    def number(value: Any, default: int, where: str) -> int:
        resolved = intrinsics.resolve(value) if value is not None else str(default)
        try:
            return int(float(resolved)) if resolved is not None else default
        except ValueError as error:
            raise TemplateError(f"{logical_id}.{where}: {value!r} is not a number") from error

    merged = {**globals_function, **properties}
    code_uri = merged.get("CodeUri")
    handler = merged.get("Handler")
    if not isinstance(code_uri, str):
        raise TemplateError(f"{logical_id}: CodeUri must be a local folder")
    if not isinstance(handler, str) or "." not in handler:
        raise TemplateError(f"{logical_id}: Handler must look like module.function")

    routes: list[ApiRoute] = []
    triggers: list[SqsTrigger] = []
    schedules: list[ScheduleTrigger] = []
    other_event_types: list[str] = []
    for event_name, event in (properties.get("Events") or {}).items():
        event_type = event.get("Type")
        event_properties = event.get("Properties") or {}
        if event_type == "Api":
            path = event_properties.get("Path")
            method = event_properties.get("Method")
            if not isinstance(path, str) or not isinstance(method, str):
                raise TemplateError(
                    f"{logical_id}.{event_name}: an Api event needs Path and Method"
                )
            routes.append(ApiRoute(path=path, method=method.upper(), event_name=event_name))
        elif event_type == "SQS":
            queue = _logical_id_of(event_properties.get("Queue"))
            if queue is None:
                raise TemplateError(f"{logical_id}.{event_name}: Queue must be !GetAtt <Queue>.Arn")
            triggers.append(
                SqsTrigger(
                    event_name=event_name,
                    queue=queue,
                    batch_size=number(
                        event_properties.get("BatchSize"), SQS_DEFAULT_BATCH_SIZE, event_name
                    ),
                    batching_window_seconds=number(
                        event_properties.get("MaximumBatchingWindowInSeconds"), 0, event_name
                    ),
                    report_batch_item_failures="ReportBatchItemFailures"
                    in (event_properties.get("FunctionResponseTypes") or []),
                    enabled=intrinsics.resolve(event_properties.get("Enabled", True)) != "false",
                    maximum_concurrency=_maximum_concurrency(event_properties, event_name),
                )
            )
        elif event_type in ("Schedule", "ScheduleV2"):
            # EventBridge rules (Schedule) name it Schedule; EventBridge
            # Scheduler (ScheduleV2) names it ScheduleExpression.
            key = "ScheduleExpression" if event_type == "ScheduleV2" else "Schedule"
            expression = str(intrinsics.resolve(event_properties.get(key)) or "")
            period = rate_seconds(expression)
            if period is None:
                notes.append(
                    f"{logical_id}.{event_name}: only rate() schedules run locally, "
                    f"not {expression!r}"
                )
                continue
            enabled = event_properties.get("Enabled", event_properties.get("State", True))
            schedules.append(
                ScheduleTrigger(
                    event_name=event_name,
                    expression=expression,
                    period_seconds=period,
                    enabled=str(intrinsics.resolve(enabled)).lower() not in ("false", "disabled"),
                )
            )
        else:
            other_event_types.append(str(event_type))
            notes.append(f"{logical_id}.{event_name}: {event_type} events are not run locally")

    return FunctionSpec(
        logical_id=logical_id,
        code_uri=(root / code_uri).resolve(),
        handler=handler,
        runtime=str(merged.get("Runtime", "")),
        timeout_seconds=number(merged.get("Timeout"), LAMBDA_DEFAULT_TIMEOUT_SECONDS, "Timeout"),
        memory_mb=number(merged.get("MemorySize"), LAMBDA_DEFAULT_MEMORY_MB, "MemorySize"),
        routes=tuple(routes),
        sqs_triggers=tuple(triggers),
        schedules=tuple(schedules),
        environment=dict((properties.get("Environment") or {}).get("Variables") or {}),
        other_event_types=tuple(other_event_types),
    )


def _logical_id_of(arn: Any) -> str | None:
    """The queue behind ``!GetAtt Queue.Arn``; None for anything else."""
    if isinstance(arn, dict) and set(arn) == {"Fn::GetAtt"}:
        target = arn["Fn::GetAtt"]
        if isinstance(target, list) and len(target) == 2 and target[1] == "Arn":
            return str(target[0])
    return None
