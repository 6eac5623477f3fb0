"""``python -m naslung.pipeline`` runs the ``naslung`` command line."""

from __future__ import annotations

import sys

from naslung.pipeline.cli import main

sys.exit(main())
