#!/bin/sh
# One image, many roles. SERVICE_ROLE set: a long-running role (python -m
# hosting). Unset: a Lambda function, whose handler is the command
# (ImageConfig.Command, e.g. functions/send/app.handler), run by the Lambda
# base image's own entry point (the runtime interface client, or its emulator
# outside Lambda).
set -e
if [ -n "${SERVICE_ROLE:-}" ]; then
    exec python -m hosting
fi
exec /lambda-entrypoint.sh "$@"
