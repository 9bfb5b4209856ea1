"""The template's queues and topics as a CloudFormation stack, SNS to SQS, and SES (issue 22).

Runs on moto by default and on LocalStack with MAILROOM_TEST_AWS=localstack
(`make integration-localstack`), which is what `make dev-localstack` deploys to.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import boto3
import pytest

from devstack.localstack import deploy, resources_template
from mailroom.adapters.providers.ses import SesProvider
from mailroom.domain.mime import OutgoingEmail
from tests.integration.conftest import TEST_AWS

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_templates_queues_deploy_with_their_redrive_and_topic(aws: str) -> None:
    # GIVEN template.yaml without its functions
    template = resources_template(REPO_ROOT / "template.yaml")
    assert not [r for r in template["Resources"].values() if "Lambda" in r["Type"]]
    # WHEN it is deployed as a CloudFormation stack
    name = f"mailroom-ls-{uuid.uuid4().hex[:8]}"
    outputs = deploy(boto3.client("cloudformation", region_name="us-east-1"), name, template)
    # THEN the send queue redrives to the DLQ after the template's receive count
    sqs = boto3.client("sqs", region_name="us-east-1")
    attributes = sqs.get_queue_attributes(
        QueueUrl=outputs["SendQueueUrl"], AttributeNames=["RedrivePolicy", "VisibilityTimeout"]
    )["Attributes"]
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == outputs["SendDeadLetterQueueArn"]
    assert int(redrive["maxReceiveCount"]) == 8
    assert attributes["VisibilityTimeout"] == "720"
    # ...and the feedback topic exists, and delivers to a subscribed queue
    sns = boto3.client("sns", region_name="us-east-1")
    sns.subscribe(
        TopicArn=outputs["SesFeedbackTopicArn"],
        Protocol="sqs",
        Endpoint=outputs["SendDeadLetterQueueArn"],
        Attributes={"RawMessageDelivery": "true"},
    )
    sns.publish(TopicArn=outputs["SesFeedbackTopicArn"], Message='{"eventType": "Delivery"}')
    received = sqs.receive_message(QueueUrl=outputs["SendDeadLetterQueueUrl"], WaitTimeSeconds=5)
    assert [m["Body"] for m in received.get("Messages", [])] == ['{"eventType": "Delivery"}']


def test_the_ses_provider_sends_where_the_endpoint_offers_v1_or_v2(aws: str) -> None:
    # GIVEN a verified sender (moto refuses unverified ones; LocalStack does not care)
    boto3.client("ses", region_name="us-east-1").verify_email_identity(
        EmailAddress="noreply@example.com"
    )
    provider = SesProvider("us-east-1")
    email = OutgoingEmail(
        message_id="<m@example.com>",
        envelope_from="noreply@example.com",
        envelope_recipients=["ada@example.com"],
        mime=b"From: noreply@example.com\r\nTo: ada@example.com\r\nSubject: hi\r\n\r\nhello\r\n",
    )
    # WHEN a message is sent
    receipt = provider.send(email)
    # THEN it is accepted: by SES v2 on moto, by SES v1 on LocalStack (no v2 there)
    assert receipt.provider_msg_id
    assert provider.uses_v1 is (TEST_AWS == "localstack")
