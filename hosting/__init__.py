"""Mailroom outside Lambda: one image, many roles (issue 22, seed A).

``python -m hosting`` runs the role SERVICE_ROLE names: ``api`` (gunicorn,
several processes, a WSGI app in front of the API functions), ``worker``
(long-polls the template's SQS queues and feeds their functions), ``scheduler``
(the template's periodic functions), or ``all`` (the three, supervised). The
functions are the Lambda handlers themselves, found in template.yaml, so a
function added there is served without a change here.
"""
