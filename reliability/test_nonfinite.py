"""NaN / inf gradients: the documented behaviour is *propagate, never skip silently*.

Like ``torch.optim``, transformers' optimizers and Keras' own, a step with a non-finite gradient is taken: the step
counters advance, the NaN/inf flows into that parameter's state and value, and it stays there. Nothing is skipped
or repaired behind the user's back (skipping is the job of loss scaling: ``GradScaler`` / ``LossScaleOptimizer``,
see ``test_mixed_precision.py``, or of an explicit ``torch.isfinite`` check). The optimizers here work per
tensor, so the other parameters are not contaminated: they equal a run in which the bad tensor's gradient was
finite. (Global gradient clipping, e.g. ``global_clipnorm``, mixes tensors by design and would spread it.)
"""

from __future__ import annotations

import math

import hf_optim_spec as hs
import numpy as np
import pytest

from reliability import _drive, _runs
from reliability.conftest import SEED, SIZES, tally

OPTIMIZERS = [s.id for s in _drive.specs_of("optimizer")]


def _scenario(spec_id: str) -> dict:
    spec = hs.get(spec_id)
    case = _drive.optimizer_case(spec, needs_lr=False)
    return {
        "id": spec_id,
        "optimizer": spec_id,
        "opt_case": case,
        "schedule": None,
        "params": {},
        "base_lr": None,
        "shapes": hs.thaw(spec.cases[case]["shapes"]),
        "steps": SIZES.nan_steps,
        "bounds": [],
        "seed": SEED,
    }


def _poison(grads: dict[str, np.ndarray], value: float) -> dict[str, np.ndarray]:
    first = next(iter(grads))
    bad = dict(grads)
    bad[first] = grads[first].copy()
    bad[first].flat[0] = value
    return bad


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("framework", _drive.FRAMEWORKS)
@pytest.mark.parametrize("spec_id", OPTIMIZERS)
def test_nonfinite_gradient_propagates_and_is_not_skipped(spec_id: str, framework: str, value: float) -> None:
    scn = _scenario(spec_id)
    names = list(scn["shapes"])
    bad_name = names[0]
    Run = _runs.TorchRun if framework == "torch" else _runs.TfRun
    poisoned, clean = Run(scn), Run(scn)
    for t in range(scn["steps"]):
        grads = _drive.grads_at(scn["seed"], t, scn["shapes"])
        for run, g in ((poisoned, _poison(grads, value) if t == 0 else grads), (clean, grads)):
            if framework == "torch":
                import torch

                for name, array in g.items():
                    run.named[name].grad = torch.from_numpy(array)
                run.optimizer.step()
            else:
                import tensorflow as tf

                run.optimizer.apply_gradients(zip([tf.constant(a) for a in g.values()], run.model.params))
    got, ref = poisoned.snapshot(), clean.snapshot()
    assert not np.isfinite(got[f"param:{bad_name}"]).all(), "the non-finite gradient vanished (silently skipped?)"
    for name in names[1:]:  # per-tensor math: the others are untouched by it
        assert np.array_equal(got[f"param:{name}"], ref[f"param:{name}"]), f"{name} was contaminated"
    state_got, state_ref = poisoned.final_state(), clean.final_state()
    stuck = [k for k, v in state_got.items() if not np.isfinite(np.asarray(v, dtype=np.float64)).all()]
    assert stuck, "the non-finite value did not stay in the optimizer state"
    if framework == "torch":  # state keys name their parameter: only the poisoned one's state differs
        changed = {k for k in state_got if not np.array_equal(state_got[k], state_ref[k], equal_nan=True)}
        assert all(k.startswith(f"state:{bad_name}:") for k in [*stuck, *changed]), sorted({*stuck, *changed})
    steps = _step_counts(framework, poisoned)
    assert steps and all(s == scn["steps"] for s in steps), f"step counters {steps}: a step was skipped"
    tally("nonfinite", {"checked": {f"{framework}:{spec_id}": 1}, "steps_after_the_bad_one": scn["steps"] - 1})


def _step_counts(framework: str, run: object) -> list[int]:
    if framework == "torch":
        return [int(state["step"]) for state in run.optimizer.state.values()]  # type: ignore[attr-defined]
    variables = run.optimizer.variables  # type: ignore[attr-defined]
    per_variable = [int(v.numpy()) for v in variables if v.path.endswith("_step")]
    return per_variable or [int(run.optimizer.iterations.numpy())]  # type: ignore[attr-defined]
