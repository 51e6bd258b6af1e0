"""``python -m hf_optim_spec`` runs the ``hf-optim`` command line."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
