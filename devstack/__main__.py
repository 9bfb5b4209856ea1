import sys

from devstack.settings import REPO_ROOT

# In Lambda the shared layer is on sys.path (/opt/python); here shared/ is,
# before anything imports mailroom.
sys.path.insert(0, str(REPO_ROOT / "shared"))

from devstack.runner import main

raise SystemExit(main())
