"""What the malformed-checkpoint fuzz runs, without importing a framework: its batches and how one is run and read.

A batch is one fresh worker process (``reliability._worker``, task ``fuzz_state``) over items of one optimizer: torch
per (optimizer, code path) with both dtypes, Keras per optimizer with every restore route its backend has and both
dtypes, and the torch schedulers. ``test_malformed_state.py`` runs every batch; ``_fuzz_backends`` the Keras ones on
the Keras backend of its environment. A crash of the process counts as one finding; the other findings are the
reports' lists :data:`FINDINGS` (``_fuzz_torch`` / ``_fuzz_keras`` fill them).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reliability._worker import launch, worker_env

OPTIMIZERS = ("adamw", "adafactor", "adam_weight_decay")
DTYPES = ("float32", "bfloat16")
TORCH_PATHS = {
    "adamw": ("for-loop", "foreach", "fused"),
    "adam_weight_decay": ("for-loop", "foreach", "fused"),
    "adafactor": ("for-loop", "foreach", "fused", "native"),
}
"""Code paths per optimizer: ``fused`` is the default path (Adafactor's with the native kernel off), ``native`` the
default Adafactor path with its C kernel (:func:`native_env`)."""
KERAS_ROUTES = ("keras_store", "set_weights", "tf_checkpoint")
TF_ONLY_ROUTES = frozenset({"tf_checkpoint"})
FINDINGS = ("silent", "unclear", "changed", "false_rejections")
"""A report's lists of findings: harmful mutations accepted, rejections by anything but a ValueError/TypeError naming
what is wrong, rejections that changed the optimizer, harmless mutations rejected."""


def native_env(spec_id: str, path: str) -> dict[str, str]:
    """The environment a torch batch runs in: the native Adafactor kernel only on its own path."""
    return {"HF_OPTIM_NATIVE": "1" if (spec_id, path) == ("adafactor", "native") else "0"}


def keras_routes(backend: str) -> tuple[str, ...]:
    """The restore routes Keras' ``backend`` has (``tf_checkpoint`` is TensorFlow's)."""
    return tuple(r for r in KERAS_ROUTES if backend == "tensorflow" or r not in TF_ONLY_ROUTES)


@dataclass(frozen=True)
class Batch:
    """One worker process: its name (a test id), the environment it adds and its items."""

    name: str
    env: dict[str, str]
    items: list[dict[str, Any]]

    @property
    def count(self) -> int:
        """Mutations asked for."""
        return sum(int(item["count"]) for item in self.items)


def torch_batches(seed: int, count: int, schedule_count: int) -> list[Batch]:
    """``count`` mutations per torch (optimizer, code path, dtype), and ``schedule_count`` of the schedulers."""
    batches = []
    for k, spec_id in enumerate(OPTIMIZERS):
        for path in TORCH_PATHS[spec_id]:
            items = [
                {"framework": "torch", "optimizer": spec_id, "route": path, "dtype": dtype, "seed": seed + 10 * k + j}
                | {"count": count}
                for j, dtype in enumerate(DTYPES)
            ]
            batches.append(Batch(f"torch-{spec_id}-{path}", native_env(spec_id, path), items))
    schedules = {"framework": "torch", "optimizer": "schedulers", "route": "load_state_dict", "dtype": "-"}
    batches.append(
        Batch("torch-schedulers", {"HF_OPTIM_NATIVE": "0"}, [schedules | {"seed": seed, "count": schedule_count}])
    )
    return batches


def keras_batches(backend: str, seed: int, count: int) -> list[Batch]:
    """``count`` mutations per Keras (optimizer, route, dtype) on Keras' ``backend``."""
    return [
        Batch(
            f"keras-{backend}-{spec_id}",
            {"KERAS_BACKEND": backend},
            [
                {"framework": "tf", "optimizer": spec_id, "route": route, "dtype": dtype, "seed": seed + 100 * k + j}
                | {"count": count}
                for j, (route, dtype) in enumerate((r, d) for r in keras_routes(backend) for d in DTYPES)
            ],
        )
        for k, spec_id in enumerate(OPTIMIZERS)
    ]


def run(batch: Batch, workdir: Path, timeout: float = 900) -> tuple[list[dict[str, Any]], str | None]:
    """The batch's reports, or the crash (exit status and the end of the output) when its process died or hung."""
    try:
        proc, report = launch({"task": "fuzz_state", "items": batch.items}, workdir, worker_env(**batch.env), timeout)
    except subprocess.TimeoutExpired as hung:
        output = "".join(
            o.decode(errors="replace") if isinstance(o, bytes) else o or "" for o in (hung.output, hung.stderr)
        )
        return [], f"{batch.name}: still running after {timeout:g} s, stopped: {output[-3000:]}"
    if report is None:
        return [], f"{batch.name}: exit status {proc.returncode}: {(proc.stdout + proc.stderr)[-3000:]}"
    return report["reports"], None


def empty_report(framework: str, optimizer: str, route: str, dtype: str) -> dict[str, Any]:
    """A batch item's report before its first mutation (``_fuzz_torch`` and ``_fuzz_keras`` fill it)."""
    counts: dict[str, Any] = {"tried": 0, "rejected": 0, "accepted_harmless": {}}
    return {"framework": framework, "optimizer": optimizer, "route": route, "dtype": dtype, **counts} | {
        name: [] for name in FINDINGS
    }


def findings(reports: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Every finding of ``reports``, per list of :data:`FINDINGS`."""
    return {name: [entry for report in reports for entry in report[name]] for name in FINDINGS}
