"""``python -m hf_optim_spec.cli`` runs the ``hf-optim`` command line."""

from __future__ import annotations

from . import main

raise SystemExit(main())
