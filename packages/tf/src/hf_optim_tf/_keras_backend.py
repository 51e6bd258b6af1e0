"""Imported first by ``hf_optim_tf``: Keras 3 with its backend, or an ImportError that says which extra to install.

Keras picks its backend from ``KERAS_BACKEND`` (TensorFlow when unset) when it is first imported, and a backend that is
not installed surfaces as Keras' own ``ModuleNotFoundError`` deep inside its import. hf-optim-tf depends on Keras
only; the backend comes from an extra.
"""

from __future__ import annotations

import os

#: backend module -> the hf-optim-tf extras that install it
EXTRAS = {"tensorflow": "[cpu] (tensorflow-cpu) or [tensorflow]", "jax": "[jax]", "torch": "[torch]"}

try:
    import keras  # noqa: F401
except ModuleNotFoundError as error:
    if error.name not in EXTRAS:
        raise
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    raise ImportError(
        f"hf-optim-tf runs on Keras 3, whose backend {backend!r} (KERAS_BACKEND="
        f"{os.environ.get('KERAS_BACKEND', '<unset>: tensorflow')}) needs the `{error.name}` package, which is not "
        f"installed. Install it with the extra pip install 'hf-optim-tf{EXTRAS[error.name]}', or choose an installed "
        "backend with KERAS_BACKEND=tensorflow|jax|torch (extras: [cpu], [tensorflow], [jax], [torch])."
    ) from error
