"""``python -m agentledger.engine``: the same as the ``agentledger`` command."""

import sys

from .cli import main

sys.exit(main())
