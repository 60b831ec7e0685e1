"""``python -m client``: the same as ``upload-pipeline``."""

import sys

from client.cli import main

sys.exit(main())
