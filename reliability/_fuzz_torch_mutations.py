"""The catalogue of malformed-checkpoint mutations of a torch optimizer ``state_dict`` (see ``_fuzz_torch``).

Each maker returns the mutated state_dict with its label: ``harmful`` (loading must be rejected with an error that
names what is wrong) or ``harmless:<reason>`` (it must load and step exactly as the equivalent clean state).
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["SAME", "Mutation", "state_dict_mutations"]

Mutation = tuple[Any, str, str, Any, dict | None]
"""(mutated state_dict, label, text the error must contain, equivalent clean state_dict (SAME: the unmutated one;
None for harmful mutations), resize)"""
SAME = object()


def _tensor_keys(entry: dict[str, Any]) -> list[str]:
    return [k for k, v in entry.items() if isinstance(v, torch.Tensor) and k != "step" and v.dim() > 0]


def state_dict_mutations(
    sd: dict[str, Any], others: dict[str, dict[str, Any]], rng: random.Random, shapes: dict[str, tuple[int, ...]]
) -> dict[str, Callable[[], Mutation]]:
    """Named mutation makers over a deep copy of ``sd`` (a state_dict of parameters of ``shapes``); each returns a
    :data:`Mutation`."""

    def pick() -> tuple[dict[str, Any], Any, str]:
        new = copy.deepcopy(sd)
        pid = rng.choice(sorted(new["state"]))
        key = rng.choice(_tensor_keys(new["state"][pid]))
        return new, pid, key

    def reshape(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], Mutation]:
        def make() -> Mutation:
            for _ in range(20):
                new, pid, key = pick()
                value = new["state"][pid][key]
                changed = fn(value)
                if changed is not None and changed.shape != value.shape:
                    new["state"][pid][key] = changed
                    return new, "harmful", key, None, None
            raise LookupError("no tensor to reshape")

        return make

    def grow(t: torch.Tensor) -> torch.Tensor:
        d = rng.randrange(t.dim())
        return torch.cat([t, t.narrow(d, 0, 1)], dim=d)

    def shrink(t: torch.Tensor) -> torch.Tensor | None:
        dims = [d for d in range(t.dim()) if t.shape[d] > 1]
        if not dims:
            return None
        d = rng.choice(dims)
        return t.narrow(d, 0, t.shape[d] - 1)

    def set_key(key_value: Callable[[torch.Tensor], Any], label: str, step: bool = False) -> Callable[[], Mutation]:
        def make() -> Mutation:
            new, pid, key = pick()
            if step:
                key = "step"
            new["state"][pid][key] = key_value(new["state"][pid][key])
            return new, label, key, (SAME if label != "harmful" else None), None

        return make

    def second_moment_negative() -> Mutation:
        new = copy.deepcopy(sd)
        pid = rng.choice(sorted(new["state"]))
        keys = [k for k in new["state"][pid] if k.startswith(("exp_avg_sq", "max_exp_avg_sq"))]
        key = rng.choice(keys)
        value = new["state"][pid][key].clone()
        value.view(-1)[rng.randrange(value.numel())] = -1.0
        new["state"][pid][key] = value
        return new, "harmful", key, None, None

    def float16_state() -> Mutation:
        new, pid, key = pick()
        value = new["state"][pid][key]
        new["state"][pid][key] = value.to(torch.float16)
        clean = copy.deepcopy(sd)
        clean["state"][pid][key] = value.to(torch.float16).to(value.dtype)
        return new, "harmless:float16 state upcast exactly to the parameter's dtype", key, clean, None

    def noncontiguous() -> Mutation:
        new = copy.deepcopy(sd)
        for pid in sorted(new["state"]):
            for key in _tensor_keys(new["state"][pid]):
                value = new["state"][pid][key]
                if value.dim() >= 2 and value.shape[-1] > 1 and value.shape[-2] > 1:
                    new["state"][pid][key] = value.transpose(-1, -2).contiguous().transpose(-1, -2)
                    return new, "harmless:non-contiguous state (loaded contiguous)", key, SAME, None
        raise LookupError("no matrix state")

    def resized(name: str, dim: int, delta: int) -> Callable[[], Mutation]:
        def make() -> Mutation:
            shape = list(shapes[name])
            shape[dim] += delta
            return copy.deepcopy(sd), "harmful", "state", None, {name: tuple(shape)}

        return make

    def missing_key() -> Mutation:
        new = copy.deepcopy(sd)
        pid = rng.choice(sorted(new["state"]))
        key = rng.choice(sorted(new["state"][pid]))
        del new["state"][pid][key]
        return new, "harmful", key, None, None

    def extra_key(key: str) -> Callable[[], Mutation]:
        def make() -> Mutation:
            new = copy.deepcopy(sd)
            pid = rng.choice(sorted(new["state"]))
            new["state"][pid][key] = torch.zeros(3)
            return new, "harmful", key, None, None

        return make

    def other(name: str) -> Callable[[], Mutation]:
        return lambda: (copy.deepcopy(others[name]), "harmful", "", None, None)

    def no_state() -> Mutation:
        new = copy.deepcopy(sd)
        del new["state"][rng.choice(sorted(new["state"]))]
        return new, "harmless:no state for a parameter (it starts afresh, like one without gradients)", "", new, None

    def unknown_id() -> Mutation:
        new = copy.deepcopy(sd)
        new["state"][999] = copy.deepcopy(new["state"][rng.choice(sorted(new["state"]))])
        return new, "harmful", "999", None, None

    def groups(fn: Callable[[list[dict[str, Any]]], Any], mention: str) -> Callable[[], Mutation]:
        def make() -> Mutation:
            new = copy.deepcopy(sd)
            fn(new["param_groups"])
            return new, "harmful", mention, None, None

        return make

    def group_key(value: Any, delete: bool = False) -> Callable[[], Mutation]:
        def make() -> Mutation:
            new = copy.deepcopy(sd)
            g = rng.randrange(len(new["param_groups"]))
            group = new["param_groups"][g]
            legacy = {"maximize", "foreach", "fused", "fp32_math", "stochastic_rounding", "rounding_seed"}
            legacy |= {"correct_bias", "first_moment", "param_names"}
            numeric = [
                k for k, v in group.items() if k not in legacy and k != "params" and isinstance(v, (float, tuple))
            ]
            key = rng.choice(numeric)
            if delete:
                del group[key]
            else:
                group[key] = value
            return new, "harmful", "param group", None, None

        return make

    def whole(value: Callable[[], Any], mention: str) -> Callable[[], Mutation]:
        return lambda: (value(), "harmful", mention, None, None)

    def with_group_extra() -> Mutation:
        new = copy.deepcopy(sd)
        new["param_groups"][0]["initial_lr"] = 0.5
        return new, "harmless:an extra group key (e.g. a scheduler's initial_lr) is kept", "", new, None

    makers: dict[str, Callable[[], Mutation]] = {
        "shape_grown": reshape(grow),
        "shape_shrunk": reshape(shrink),
        "shape_transposed": reshape(lambda t: t.transpose(-1, -2) if t.dim() >= 2 else None),
        "shape_broadcastable_n1": reshape(lambda t: t.unsqueeze(-1)),
        "shape_broadcastable_1n": reshape(lambda t: t.unsqueeze(0)),
        "shape_flattened": reshape(lambda t: t.reshape(-1) if t.dim() >= 2 else t.reshape(1, -1)),
        "shape_scalar": reshape(lambda t: t.sum()),
        "param_grown_rows": resized("emb", 0, 2),
        "param_shrunk_rows": resized("emb", 0, -3),
        "param_grown_cols": resized("w3", 2, 1),
        "param_grown_vector": resized("bias", 0, 1),
        "missing_key": missing_key,
        "extra_key": extra_key("momentum_buffer"),
        "extra_known_key": extra_key("exp_avg_sq_row"),
        "dtype_int32": set_key(lambda t: t.to(torch.int32), "harmful"),
        "dtype_bool": set_key(lambda t: t > 0, "harmful"),
        "dtype_complex": set_key(lambda t: t.to(torch.complex64), "harmful"),
        "dtype_float64": set_key(lambda t: t.to(torch.float64), "harmless:float64 state cast to the parameter's dtype"),
        "dtype_float16": float16_state,
        "not_a_tensor_list": set_key(lambda t: t.tolist(), "harmful"),
        "not_a_tensor_str": set_key(lambda t: "exp_avg", "harmful"),
        "meta_device": set_key(lambda t: t.to("meta"), "harmful"),
        "sparse_state": set_key(lambda t: t.to_sparse(), "harmful"),
        "negative_second_moment": second_moment_negative,
        "noncontiguous": noncontiguous,
        "step_nan": set_key(lambda t: torch.tensor(math.nan), "harmful", step=True),
        "step_inf": set_key(lambda t: torch.tensor(math.inf), "harmful", step=True),
        "step_negative": set_key(lambda t: torch.tensor(-1.0), "harmful", step=True),
        "step_fractional": set_key(lambda t: torch.tensor(1.5), "harmful", step=True),
        "step_fractional_float": set_key(lambda t: 2.5, "harmful", step=True),
        "step_string": set_key(lambda t: "2", "harmful", step=True),
        "step_bool": set_key(lambda t: True, "harmful", step=True),
        "step_vector": set_key(lambda t: torch.tensor([2.0, 2.0]), "harmful", step=True),
        "step_int": set_key(int, "harmless:int step (transformers' format)", step=True),
        "step_int64": set_key(lambda t: t.to(torch.int64), "harmless:int64 step tensor", step=True),
        "step_float64": set_key(lambda t: t.to(torch.float64), "harmless:float64 step tensor", step=True),
        "state_missing_for_param": no_state,
        "state_unknown_param_id": unknown_id,
        "groups_truncated": groups(lambda gs: gs.pop(), "param groups"),
        "group_params_truncated": groups(lambda gs: gs[0]["params"].pop(), "param group 0"),
        "group_params_duplicated": groups(lambda gs: gs[1]["params"].__setitem__(0, gs[0]["params"][0]), "twice"),
        "group_params_not_ids": groups(lambda gs: gs[0].__setitem__("params", "0,1"), "params"),
        "group_hyper_string": group_key("garbage"),
        "group_hyper_missing": group_key(None, delete=True),
        "group_flag_garbage": groups(lambda gs: gs[0].__setitem__("foreach", "yes"), "foreach"),
        "group_extra_key": with_group_extra,
        "not_a_dict": whole(lambda: [sd], "state_dict"),
        "no_state_entry": whole(lambda: {"param_groups": copy.deepcopy(sd["param_groups"])}, "state"),
        "state_not_a_dict": whole(lambda: {**copy.deepcopy(sd), "state": [1, 2]}, "state"),
    }
    for name in others:
        makers[f"other_optimizer_{name}"] = other(name)
    if "RMS" in next(iter(sd["state"].values())):
        makers["rms_python_float"] = _rms_number(sd, rng)
    return makers


def _rms_number(sd: dict[str, Any], rng: random.Random) -> Callable[[], Mutation]:
    def make() -> Mutation:
        new = copy.deepcopy(sd)
        pid = rng.choice(sorted(new["state"]))
        new["state"][pid]["RMS"] = float(new["state"][pid]["RMS"])
        return new, "harmless:RMS as a Python number (transformers' format; recomputed at every step)", "", SAME, None

    return make
