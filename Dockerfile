# syntax=docker/dockerfile:1
# One image, many roles (issue 22). NOT built or run on the machine this was
# written on (no Docker there); the roles' Python entry point (hosting/) is
# tested without Docker (tests/integration/test_hosting_roles.py).
#
#   docker build -t mailroom .
#   Lambda:  any function, ImageConfig.Command = functions/<name>/app.handler
#   Service: docker run -e SERVICE_ROLE=api|worker|scheduler|all ... mailroom

# 1. Dependencies, built once into a folder of their own.
FROM public.ecr.aws/lambda/python:3.12 AS dependencies
COPY layers/dependencies/requirements.txt requirements-service.txt /tmp/
RUN pip install --no-cache-dir --target /opt/dependencies \
        -r /tmp/requirements.txt -r /tmp/requirements-service.txt

# 2. The image: the Lambda Python base (it ships boto3 and the runtime
#    interface client) with the dependencies and Mailroom's code.
FROM public.ecr.aws/lambda/python:3.12
COPY --from=dependencies /opt/dependencies ${LAMBDA_TASK_ROOT}
COPY shared/mailroom ${LAMBDA_TASK_ROOT}/mailroom
COPY functions ${LAMBDA_TASK_ROOT}/functions
COPY devstack ${LAMBDA_TASK_ROOT}/devstack
COPY hosting ${LAMBDA_TASK_ROOT}/hosting
COPY templates ${LAMBDA_TASK_ROOT}/templates
COPY template.yaml ${LAMBDA_TASK_ROOT}/template.yaml
ENV TEMPLATES_DIR=${LAMBDA_TASK_ROOT}/templates \
    MAILROOM_TEMPLATE=${LAMBDA_TASK_ROOT}/template.yaml \
    PYTHONUNBUFFERED=1
# The api role's port (MAILROOM_API_BIND, 0.0.0.0:8080 by default).
EXPOSE 8080
ENTRYPOINT ["/var/task/hosting/entrypoint.sh"]
CMD ["functions/status/app.handler"]
