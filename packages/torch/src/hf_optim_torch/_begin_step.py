"""The start of every optimizer step: the closure, then the checks that reject a step before it changes anything."""

from __future__ import annotations

from operator import attrgetter
from typing import Any

import torch

from ._path_choice import FUSED_NOT_CAPTURED, capturing, compiling
from ._step_count import mark_captured
from ._torch_fused_adam import fused_problem

__all__ = ["SPARSE_LAYOUTS", "begin_step"]

#: gradient layouts the optimizers reject (transformers' "does not support sparse gradients")
SPARSE_LAYOUTS = frozenset({torch.sparse_coo, torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr, torch.sparse_bsc})


def begin_step(
    optimizer: torch.optim.Optimizer,
    closure: Any,
    sparse_error: str,
    fused_dtypes: tuple[torch.dtype, ...] | None = None,
) -> Any:
    """The start of every ``step``: run the closure with gradients enabled, then reject what cannot be stepped.

    Sparse gradients are rejected (``RuntimeError(sparse_error)``), and so is a float16 parameter with a gradient
    in a group with ``stochastic_rounding`` (``ValueError``: only bfloat16 storage has stochastic rounding), and,
    when ``fused_dtypes`` is given, a parameter of a ``fused=True`` group that the fused kernel cannot take
    (``RuntimeError``, see :func:`fused_problem`), a parameter whose shape no longer fits its gradient or its state
    (``ValueError``, see :func:`_check_shapes`), and what a CUDA graph cannot capture (:func:`_check_capture`).
    Every parameter of every group is checked before any state or parameter changes, so a rejected step changes
    nothing. Returns the closure's loss (None without a closure).
    """
    loss = None
    if closure is not None:
        with torch.enable_grad():
            loss = closure()
    index = 0  # the parameter's position among all parameters (in the errors)
    for group in optimizer.param_groups:
        params = group["params"]
        if not SPARSE_LAYOUTS.isdisjoint({grad.layout for p in params if (grad := p.grad) is not None}):
            raise RuntimeError(sparse_error)
        rounding = group.get("stochastic_rounding", False)
        fused = fused_dtypes is not None and group.get("fused")
        if rounding or fused:  # per parameter only where a group asks for more than the default paths take
            for position, p in enumerate(params, start=index):
                if p.grad is None:
                    continue
                if rounding and p.dtype == torch.float16:
                    raise ValueError(
                        "`stochastic_rounding=True` supports bfloat16 parameters; got a float16 parameter "
                        f"(index {position})"
                    )
                if fused:
                    problem = fused_problem(p, group, fused_dtypes)
                    if problem is not None:
                        raise RuntimeError(f"fused=True cannot step parameter {position}: {problem}")
        index += len(params)
    _check_shapes(optimizer)
    stepped = next((p for group in optimizer.param_groups for p in group["params"] if p.grad is not None), None)
    if stepped is not None and capturing([stepped]):
        _check_capture(optimizer)
    return loss


_SHAPE = attrgetter("shape")


def _check_shapes(optimizer: torch.optim.Optimizer) -> None:
    """Refuse a step when a parameter with a gradient no longer fits its state or its gradient (ValueError), before
    anything changes.

    A parameter can change shape under the optimizer: ``p.data = torch.empty(...)`` (an embedding resized in place,
    without a new ``Parameter``) or an in-place view op such as ``p.t_()``. Its state still has the old shape (or, for
    Adafactor, the statistics of the other rank: factored rows and columns for a vector), and the step would fail
    inside the update, as a broadcast or index error, after the parameters before it had been stepped, or step on
    with statistics of the wrong shape. Each param group keeps the shapes its parameters had when they were last
    checked, so that a step reads one shape per parameter (about 15 µs for 200 parameters) and looks at the state
    only of a parameter whose shape changed, or at a group's first step. A parameter without a gradient is not
    stepped, so a state that no longer fits it is left alone until it has one (a frozen embedding resized under its
    old state). Not compared at every step: a state tensor replaced by hand (``load_state_dict`` checks a loaded one;
    the native kernel checks every size it is handed) and a gradient reshaped in place after ``backward``. Left out
    under ``torch.compile`` (dynamo guards every shape it traced: a new shape traces the step again, where the
    state's shapes meet the parameter's and the trace fails before the step runs).
    """
    if compiling():
        return
    kept: dict[int, list[torch.Size | None]] = optimizer.__dict__.setdefault("_checked_shapes", {})
    for g, group in enumerate(optimizer.param_groups):
        params = group["params"]
        shapes: list[torch.Size | None] = list(map(_SHAPE, params))
        old = kept.get(g)
        if old == shapes:
            continue
        same = old is not None and len(old) == len(shapes)
        for index, (param, shape) in enumerate(zip(params, shapes)):
            if same and old[index] == shape:  # type: ignore[index]
                continue
            if param.grad is None:  # not stepped: a state that does not fit is looked at again at every step
                if not _fits(optimizer, group, param):
                    shapes[index] = None
                continue
            _check_fit(optimizer, group, param, f"param group {g}, parameter {index} (shape {tuple(param.shape)})")
        kept[g] = shapes


def _fits(optimizer: torch.optim.Optimizer, group: dict[str, Any], param: torch.Tensor) -> bool:
    try:
        _check_fit(optimizer, group, param, "")
    except ValueError:
        return False
    return True


def _check_fit(optimizer: torch.optim.Optimizer, group: dict[str, Any], param: torch.Tensor, where: str) -> None:
    """A ValueError naming the gradient or the state key of ``param`` that does not have the shape ``param`` needs, or
    the state key it needs and its state lacks (the optimizer's ``_state_layout``; a key the optimizer creates where
    it is missing, ``_CREATED_WHEN_MISSING``, may be absent)."""
    grad = param.grad
    if grad is not None and grad.shape != param.shape:
        raise ValueError(f"{where}: its gradient has shape {tuple(grad.shape)}; it must have the parameter's shape")
    state = optimizer.state.get(param)
    if not state:
        return
    remedy = (
        "was the parameter resized after its state was made (`p.data = ...`)? Drop its state "
        "(`del optimizer.state[p]`: it starts afresh) or load a checkpoint made for this shape"
    )
    optional = optimizer._CREATED_WHEN_MISSING  # type: ignore[attr-defined]
    for key, slot in optimizer._state_layout(param, group).items():  # type: ignore[attr-defined]
        if slot.shape is None:
            continue
        value = state.get(key)
        if value is None and key not in optional:
            held = sorted(str(k) for k in state)
            raise ValueError(f"{where}: its state has no `{key}`, which it needs (it holds {held}): {remedy}")
        if isinstance(value, torch.Tensor) and tuple(value.shape) != slot.shape:
            raise ValueError(
                f"{where}: its state `{key}` has shape {tuple(value.shape)}, which does not fit the parameter (it "
                f"needs {slot.shape}): {remedy}"
            )


#: the group flags a captured step refuses, and why
_NOT_CAPTURED = {
    "fused": FUSED_NOT_CAPTURED,
    "stochastic_rounding": "its rounding keys come from each step's count on the host, which every replay would repeat",
}


def _check_capture(optimizer: torch.optim.Optimizer) -> None:
    """A step being captured into a CUDA graph (``torch.cuda.graph``): refuse what a replay would get wrong, then
    mark the step counters as advanced by the graph (``._step_count.mark_captured``).

    A replay repeats the captured device work with the values the step's Python computed at capture, so a captured
    step must compute every per-step number on the device from the state: the multi-tensor and for-loop paths do (a
    tensor ``lr``, which a scheduler updates in place, is read on the device too; a float ``lr`` is replayed as it
    was). Refused, before anything changes: ``fused=True`` (its kernel takes each step's scalars as Python numbers;
    the default path is not the fused one while capturing), ``stochastic_rounding=True`` on a bfloat16 parameter
    (its keys come from each step's count on the host), a tensor ``lr`` on another device than the parameters, and
    a parameter whose state is not complete on its device (state is created or moved eagerly: torch's recipe takes
    a few warm-up steps on a side stream before capturing).
    """
    steps = []
    index = 0
    for group in optimizer.param_groups:
        lr = group.get("lr")
        for p in group["params"]:
            state = optimizer.state.get(p) or {}
            if p.grad is not None:
                for flag, why in _NOT_CAPTURED.items():
                    if group.get(flag) and (flag == "fused" or p.dtype == torch.bfloat16):  # (keys: bfloat16 only)
                        raise ValueError(
                            f"`{flag}=True` cannot be captured into a CUDA graph: {why}. "
                            f"Received: {flag}=True for parameter {index}"
                        )
                if isinstance(lr, torch.Tensor) and lr.device != p.device:
                    raise ValueError(
                        "a tensor `lr` must be on the parameters' device to be captured into a CUDA graph (a kernel "
                        "takes another device's 0-dim tensor as a number at capture, and every replay would repeat "
                        f"it). Received: lr on {lr.device} for parameter {index} on {p.device}"
                    )
                for name in optimizer._state_layout(p, group):  # type: ignore[attr-defined]
                    value = state.get(name)
                    if not isinstance(value, torch.Tensor) or value.device != p.device:
                        raise RuntimeError(
                            f"parameter {index} has no state[{name!r}] on its device to capture into a CUDA graph "
                            "(a replay would repeat its creation): take an eager step first (torch's recipe: a few "
                            "warm-up steps on a side stream before torch.cuda.graph)"
                        )
            if isinstance(state.get("step"), torch.Tensor):
                steps.append(state["step"])
            index += 1
    mark_captured(steps)
