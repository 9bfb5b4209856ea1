"""Settings every test run starts from.

SENDER_VERIFICATION is off for the suites written before sending domains
existed (issue 16): their clients send as whatever domain they like. Tests of
the sender check pass ``sender_verification`` explicitly. Set here, it also
reaches the local runner the e2e tests start (it inherits this environment).
"""

import os

os.environ.setdefault("SENDER_VERIFICATION", "off")
