"""Integration suite setup: two CPU threads at most, quiet TensorFlow, and the warnings of the clients we drive.

The clients (transformers, accelerate, KerasHub, torch.compile) are imported by the test modules themselves; each
module needs only its own client, so a failing install of one shows as that module's error alone.
"""

from __future__ import annotations

import os

# Before any framework initialises: the suite shares two cores with the rest of the machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "2")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# Nothing is downloaded: the models are built from configs, and the hubs are told so.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

torch.set_num_threads(2)


def pytest_configure(config: pytest.Config) -> None:
    # The workspace turns every warning into an error; these come from the clients, not from hf-optim.
    for line in (
        # torch's dynamo tracing touches a deprecated torch.jit API
        "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning",
    ):
        config.addinivalue_line("filterwarnings", line)
