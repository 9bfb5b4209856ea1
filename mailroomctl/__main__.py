import sys

from mailroomctl.cli import main

sys.exit(main())
