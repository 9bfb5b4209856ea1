import sys
from pathlib import Path

# The mailroom package: /opt/python in Lambda, shared/ in this checkout and the image.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "shared"))

from hosting.roles import main

sys.exit(main())
