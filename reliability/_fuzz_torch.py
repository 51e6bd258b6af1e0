"""Malformed-checkpoint fuzz, torch side: mutate a real optimizer / scheduler ``state_dict`` and load it.

:func:`run_batch` trains a small model for two steps, takes the optimizer's ``state_dict`` and, ``count`` times,
applies one seeded mutation and loads the result into a fresh optimizer over fresh parameters. Every mutation is
labelled: ``harmful`` ones must be rejected with a ValueError/TypeError that names what is wrong, leaving the
optimizer as it was; ``harmless:<reason>`` ones must load, and one step after them must equal, bit for bit, the step
after loading the equivalent clean checkpoint. The caller runs each batch in a fresh process, so a crash (a
segfault in a kernel, an abort) is counted as one. :func:`run_schedule_batch` does the same for the schedulers.
"""

from __future__ import annotations

import copy
import math
import os
import random
from collections.abc import Callable
from typing import Any

import torch

OPTIMIZERS = ("adamw", "adafactor", "adam_weight_decay")
PATHS = {
    "adamw": ("for-loop", "foreach", "fused"),
    "adam_weight_decay": ("for-loop", "foreach", "fused"),
    "adafactor": ("for-loop", "foreach", "fused", "native"),
}
"""Code paths per optimizer: ``fused`` is the default path (Adafactor's with the native kernel off), ``native`` the
default Adafactor path with its C kernel (the worker sets HF_OPTIM_NATIVE accordingly)."""
DTYPES = ("float32", "bfloat16")
SHAPES = {"emb": (10, 8), "w3": (2, 3, 4), "bias": (8,), "ln": (8,)}
GROUPS = (("emb", "w3"), ("bias", "ln"))


def native_env(spec_id: str, path: str) -> dict[str, str]:
    """The environment a batch runs in: the native Adafactor kernel only on its own path."""
    return {"HF_OPTIM_NATIVE": "1" if (spec_id, path) == ("adafactor", "native") else "0"}


def path_kwargs(path: str) -> dict[str, Any]:
    """The optimizer arguments that select ``path`` (the default path takes none)."""
    return {"for-loop": {"foreach": False, "fused": False}, "foreach": {"foreach": True}}.get(path, {})


def _hyper(spec_id: str, path: str, dtype: str, variant: int) -> dict[str, Any]:
    kw = path_kwargs(path)
    if spec_id == "adamw":
        kw |= {"lr": 1e-2, "weight_decay": 0.01, "fp32_math": dtype != "float32"}
    elif spec_id == "adam_weight_decay":
        kw |= {"learning_rate": 1e-2, "weight_decay_rate": 0.01, "amsgrad": bool(variant % 2)}
        kw |= {"exclude_from_weight_decay": ["ln"], "fp32_math": dtype != "float32"}
    elif variant % 2:
        kw |= {"beta1": 0.9, "lr": 1e-2, "relative_step": False, "scale_parameter": False}
    return kw


class _Model:
    """Fresh parameters (from fixed values, optionally resized) and an optimizer over them in two groups."""

    def __init__(self, spec_id: str, path: str, dtype: str, variant: int, values: dict[str, torch.Tensor]) -> None:
        self.spec_id, self.path, self.dtype, self.variant = spec_id, path, dtype, variant
        self.values = values

    def build(self, resize: dict[str, tuple[int, ...]] | None = None, spec_id: str | None = None) -> tuple[Any, dict]:
        import hf_optim_torch as ht

        spec_id = spec_id or self.spec_id
        params = {}
        for name, value in self.values.items():
            shape = (resize or {}).get(name)
            data = value.clone() if shape is None else torch.zeros(shape, dtype=value.dtype)
            params[name] = torch.nn.Parameter(data)
        cls = {"adamw": ht.AdamW, "adafactor": ht.Adafactor, "adam_weight_decay": ht.AdamWeightDecay}[spec_id]
        kw = _hyper(spec_id, self.path, self.dtype, self.variant)
        named = spec_id == "adam_weight_decay"
        groups = []
        for k, names in enumerate(GROUPS):
            group: dict[str, Any] = {"params": [params[n] for n in names]}
            if named:
                group["param_names"] = list(names)
            if k == 1 and "lr" in kw:
                group["lr"] = kw["lr"] / 2
            groups.append(group)
        if spec_id == "adam_weight_decay" and "learning_rate" in kw:
            groups[1]["lr"] = kw["learning_rate"] / 2
        return cls(groups, **kw), params


def _grads(params: dict[str, torch.Tensor], seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for p in params.values():
        p.grad = torch.randn(p.shape, generator=gen).to(p.dtype)


def _snapshot(optimizer: Any, params: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    out = [p.detach().clone() for p in params.values()]
    for state in optimizer.state.values():
        for key in sorted(state):
            value = state[key]
            out.append(value.detach().clone() if isinstance(value, torch.Tensor) else torch.tensor(float(value)))
    return out


def _equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(
        x.shape == y.shape and x.dtype == y.dtype and bool(torch.equal(x.nan_to_num(), y.nan_to_num()))
        for x, y in zip(a, b)
    )


def _groups_view(optimizer: Any) -> list[dict[str, Any]]:
    return [{k: copy.deepcopy(v) for k, v in g.items() if k != "params"} for g in optimizer.param_groups]


Mutation = tuple[Any, str, str, Any, dict | None]
"""(mutated state_dict, label, text the error must contain, equivalent clean state_dict (SAME: the unmutated one;
None for harmful mutations), resize)"""
SAME = object()


def _tensor_keys(entry: dict[str, Any]) -> list[str]:
    return [k for k, v in entry.items() if isinstance(v, torch.Tensor) and k != "step" and v.dim() > 0]


def _mutations(
    sd: dict[str, Any], others: dict[str, dict[str, Any]], rng: random.Random
) -> dict[str, Callable[[], Mutation]]:
    """Named mutation makers over a deep copy of ``sd``; each returns a :data:`Mutation`."""

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
            shape = list(SHAPES[name])
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


def _new_report(target: str, route: str, dtype: str) -> dict[str, Any]:
    """An empty batch report (the layout ``test_malformed_state`` reads, shared with ``_fuzz_keras``)."""
    counts = {"tried": 0, "rejected": 0, "accepted_harmless": {}, "kinds": {}}
    findings: dict[str, list[str]] = {"silent": [], "unclear": [], "changed": [], "false_rejections": []}
    return {"framework": "torch", "optimizer": target, "route": route, "dtype": dtype, **counts, **findings}


def run_batch(spec_id: str, path: str, dtype: str, seed: int, count: int) -> dict[str, Any]:
    """``count`` mutated checkpoints of ``spec_id`` on ``path`` with ``dtype`` parameters (see the module doc)."""
    import hf_optim_torch._native as native

    assert os.environ.get("HF_OPTIM_NATIVE") == native_env(spec_id, path)["HF_OPTIM_NATIVE"], "run in a worker"
    rng = random.Random(seed)
    torch.manual_seed(seed)
    dt = getattr(torch, dtype)
    values = {name: torch.randn(shape).to(dt) for name, shape in SHAPES.items()}
    model = _Model(spec_id, path, dtype, seed, values)

    def trained(name: str) -> dict[str, Any]:
        optimizer, params = model.build(spec_id=name)
        for k in range(2):
            _grads(params, seed + k)
            optimizer.step()
        return copy.deepcopy(optimizer.state_dict())

    sd = trained(spec_id)
    others = {name: trained(name) for name in OPTIMIZERS if name != spec_id}

    def step_after(state_dict: Any) -> list[torch.Tensor]:
        optimizer, params = model.build()
        optimizer.load_state_dict(copy.deepcopy(state_dict))
        _grads(params, seed + 7)
        optimizer.step()
        return _snapshot(optimizer, params)

    makers = _mutations(sd, others, rng)
    names = sorted(makers)
    report = _new_report(spec_id, path, dtype) | {"native": native.status()}
    reference_cache: list[list[torch.Tensor]] = []
    for i in range(count):
        kind = names[i % len(names)] if i < len(names) else rng.choice(names)
        try:
            mutated, label, mention, clean, resize = makers[kind]()
        except LookupError:
            continue
        if clean is not None and clean is not SAME:
            clean = copy.deepcopy(clean)  # a load may alias the loaded tensors, and the step then advances them
        report["tried"] += 1
        report["kinds"][kind] = report["kinds"].get(kind, 0) + 1
        optimizer, params = model.build(resize=resize)
        before_groups = _groups_view(optimizer)
        before_params = [p.detach().clone() for p in params.values()]
        where = f"torch {spec_id}/{path}/{dtype} #{i} {kind}"
        try:
            optimizer.load_state_dict(mutated)
        except (ValueError, TypeError) as error:
            report["rejected"] += 1
            text = str(error)
            if mention and mention not in text:
                report["unclear"].append(f"{where}: {type(error).__name__} does not name {mention!r}: {text}")
            if (
                len(optimizer.state)
                or _groups_view(optimizer) != before_groups
                or not _equal(before_params, [p.detach() for p in params.values()])
            ):
                report["changed"].append(f"{where}: rejected ({text}) but the optimizer changed")
            if label != "harmful":
                report["false_rejections"].append(f"{where}: {text}")
            continue
        except Exception as error:  # anything else is a finding
            report["rejected"] += 1
            report["unclear"].append(f"{where}: {type(error).__name__}: {error}")
            continue
        if label == "harmful":
            report["silent"].append(f"{where}: accepted")
            continue
        report["accepted_harmless"][label] = report["accepted_harmless"].get(label, 0) + 1
        try:
            _grads(params, seed + 7)
            optimizer.step()
            got = _snapshot(optimizer, params)
        except Exception as error:
            report["silent"].append(f"{where}: accepted as harmless, then step raised {type(error).__name__}: {error}")
            continue
        if clean is SAME:
            if not reference_cache:
                reference_cache.append(step_after(sd))
            expected = reference_cache[0]
        else:
            expected = step_after(clean)
        if not _equal(got, expected):
            report["silent"].append(f"{where}: accepted as harmless but the next step differs from the clean one")
    return report


def _schedulers(optimizer_factory: Callable[[], Any]) -> dict[str, Callable[[], Any]]:
    import hf_optim_torch as ht

    return {
        "linear": lambda: ht.get_linear_schedule_with_warmup(optimizer_factory(), 2, 10),
        "cosine": lambda: ht.get_cosine_schedule_with_warmup(optimizer_factory(), 2, 10),
        "wsd": lambda: ht.get_wsd_schedule(optimizer_factory(), 2, 3, num_training_steps=10),
        "plateau": lambda: ht.get_reduce_on_plateau_schedule(optimizer_factory(), patience=1),
        "adafactor": lambda: ht.AdafactorSchedule(ht.Adafactor([torch.nn.Parameter(torch.ones(2))])),
        "create_optimizer": lambda: ht.create_optimizer([torch.nn.Parameter(torch.ones(2))], 1e-3, 10, 2)[1],
    }


def _step_scheduler(scheduler: Any, k: int) -> None:
    if hasattr(scheduler, "lr_lambdas"):
        scheduler.optimizer.step()
        scheduler.step()
    else:
        scheduler.step(1.0 + (k % 2))


def run_schedule_batch(seed: int, count: int) -> dict[str, Any]:
    """``count`` mutated scheduler state_dicts over the scheduler kinds; same report as :func:`run_batch`."""
    import hf_optim_torch as ht

    rng = random.Random(seed)
    build = _schedulers(lambda: ht.AdamW([torch.nn.Parameter(torch.ones(2))], lr=0.1))
    saved = {}
    for name, make in build.items():
        scheduler = make()
        for k in range(3):
            _step_scheduler(scheduler, k)
        saved[name] = copy.deepcopy(scheduler.state_dict())
    garbage: list[tuple[str, Any]] = [
        ("a string", "x"),
        ("NaN", math.nan),
        ("a negative number", -3),
        ("a fraction", 2.5),
        ("None", None),
        ("a list", [1, 2, 3]),
        ("a dict", {"a": 1}),
    ]
    report = _new_report("schedulers", "load_state_dict", "-")
    names = sorted(build)
    for i in range(count):
        name = names[i % len(names)]
        sd = copy.deepcopy(saved[name])
        choice = rng.randrange(4)
        if choice == 0:  # another scheduler's state
            other = rng.choice([n for n in names if n != name])
            mutated, kind, label = copy.deepcopy(saved[other]), f"other_scheduler_{other}", "harmful"
        elif choice == 1:  # a field removed
            key = rng.choice([k for k in sorted(sd) if not k.startswith("_") and k != "default_min_lr"])
            del sd[key]
            mutated, kind, label = sd, "missing_field", "harmful"
        elif choice == 2 and "lr_lambdas" in sd:  # a garbled schedule argument
            entry = sd["lr_lambdas"][0]
            target = entry.get("params", entry)
            key = rng.choice(sorted(target)) if target else None
            what, value = rng.choice(garbage[:3] + garbage[5:])
            if key is None:
                continue
            target[key] = value
            mutated, kind, label = sd, f"garbled_argument ({what})", "unknown"
        else:  # a garbled field
            key = rng.choice([k for k in sorted(sd) if k not in ("_get_lr_called_within_step", "_is_initial")])
            what, value = rng.choice(garbage)
            sd[key] = value
            mutated, kind, label = sd, f"garbled_field ({what})", "unknown"
        report["tried"] += 1
        report["kinds"][kind] = report["kinds"].get(kind, 0) + 1
        scheduler = build[name]()
        before = copy.deepcopy({k: v for k, v in scheduler.state_dict().items()})
        where = f"torch scheduler {name} #{i} {kind}"
        try:
            scheduler.load_state_dict(mutated)
        except (ValueError, TypeError) as error:
            report["rejected"] += 1
            if repr(scheduler.state_dict()) != repr(before):
                report["changed"].append(f"{where}: rejected ({error}) but the scheduler changed")
            continue
        except Exception as error:
            report["rejected"] += 1
            report["unclear"].append(f"{where}: {type(error).__name__}: {error}")
            continue
        # accepted: it must have been a value the scheduler can run with (a garbled value that is still legal)
        try:
            for k in range(3):
                _step_scheduler(scheduler, k)
            lrs = [float(g["lr"]) for g in scheduler.optimizer.param_groups]
        except Exception as error:
            report["silent"].append(f"{where}: accepted, then stepping raised {type(error).__name__}: {error}")
            continue
        if label == "harmful" or not all(math.isfinite(lr) and lr >= 0 for lr in lrs):
            report["silent"].append(f"{where}: accepted (lrs {lrs})")
        else:
            reason = f"harmless:{kind} still a legal value"
            if os.environ.get("HF_OPTIM_FUZZ_DEBUG"):
                print(where, {k: v for k, v in mutated.items() if repr(v) != repr(saved[name].get(k))})
            report["accepted_harmless"][reason] = report["accepted_harmless"].get(reason, 0) + 1
    return report
