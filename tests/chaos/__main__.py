"""python -m tests.chaos --duration S --seed N [--servers full|small] [--json PATH]: exit 0 when every invariant
held, 1 when one broke, 2 when the stack could not be built."""

from __future__ import annotations

import sys

from tests.chaos.run import main

sys.exit(main(sys.argv[1:]))
