"""``python -m modelrouter``: the command line (``cli``)."""

from .cli import main

raise SystemExit(main())
