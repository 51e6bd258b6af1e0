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

from ._fuzz_plan import OPTIMIZERS, empty_report, native_env
from ._fuzz_torch_mutations import SAME, state_dict_mutations

SHAPES = {"emb": (10, 8), "w3": (2, 3, 4), "bias": (8,), "ln": (8,)}
GROUPS = (("emb", "w3"), ("bias", "ln"))


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

    makers = state_dict_mutations(sd, others, rng, SHAPES)
    names = sorted(makers)
    report = empty_report("torch", spec_id, path, dtype) | {"kinds": {}, "native": native.status()}
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
    report = empty_report("torch", "schedulers", "load_state_dict", "-") | {"kinds": {}}
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
