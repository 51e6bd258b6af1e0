"""The catalogue of malformed-state mutations of a trained Keras optimizer (see ``_fuzz_keras``).

Each factory draws one mutation of the optimizer's variables for a restore route, labelled ``harmful`` (the
restore must be rejected with an error naming one of ``names``, the optimizer unchanged) or ``harmless:<reason>``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from hf_optim_tf._state_check import COUNTER_KEYS, NONNEGATIVE_KEYS

__all__ = ["Mutation", "Trained", "state_mutations"]


@dataclass
class Trained:
    """An optimizer after training: its variables' values, state keys and model paths, and the trained model."""

    optimizer: Any
    values: list[np.ndarray]
    keys: list[str]
    owners: list[str | None]
    model: list[np.ndarray]


@dataclass
class Mutation:
    kind: str
    label: str  # "harmful" or "harmless:<reason>"
    values: Any  # list of arrays, a store dict, a checkpoint path, or other input for the route
    names: tuple[str, ...]  # one of them must appear in the error message
    where: str


def _string_array(shape: tuple[int, ...]) -> np.ndarray:
    return np.full(shape, b"0.5", dtype=object) if shape else np.array(b"0.5", dtype=object)


def state_mutations(
    trained: Trained, others: dict[str, Trained], route: str, dtype: str, rng: random.Random, unbuilt: int
) -> list[Callable[[], Mutation | None]]:
    """Factories of one mutation each (None when it does not apply to the drawn entry); drawn uniformly."""
    values, keys, owners = trained.values, trained.keys, trained.owners
    n = len(values)
    floats = [i for i in range(n) if keys[i] not in COUNTER_KEYS]
    tensors = [i for i in range(n) if values[i].ndim >= 1]
    counters = [i for i in range(n) if keys[i] in COUNTER_KEYS]
    seconds = [i for i in range(n) if keys[i] in NONNEGATIVE_KEYS and values[i].size]
    rate = [i for i in range(n) if keys[i] == "learning_rate"]

    def where(i: int) -> str:
        return f"`{keys[i]}` of {owners[i] or 'the optimizer'} (variable {i}, shape {values[i].shape})"

    def one(i: int, new: Any, kind: str, label: str = "harmful") -> Mutation:
        changed = list(values)
        changed[i] = new
        return Mutation(kind, label, changed, (f"`{keys[i]}`",), where(i))

    def structural(kind: str, changed: Any, label: str = "harmful") -> Mutation:
        size = len(changed.values if isinstance(changed, Trained) else changed)
        return Mutation(kind, label, changed, ("variables", "keys", "state"), f"{size} values for {n} variables")

    def reshape(kind: str) -> Callable[[], Mutation | None]:
        def make() -> Mutation | None:
            i = rng.choice(tensors if kind != "scalar_for_scalar" else [j for j in range(n) if values[j].ndim == 0])
            v = values[i]
            if kind == "grown":
                axis = rng.randrange(v.ndim)
                new = np.concatenate([v, np.take(v, [0], axis=axis)], axis=axis)
            elif kind == "shrunk":
                axes = [a for a in range(v.ndim) if v.shape[a] > 1]
                if not axes:
                    return None
                axis = rng.choice(axes)
                new = np.take(v, range(v.shape[axis] - 1), axis=axis)
            elif kind == "transposed":
                if v.ndim < 2 or len(set(v.shape)) == 1:
                    return None
                new = np.transpose(v)
            elif kind == "broadcastable":
                new = v.reshape((1, *v.shape)) if rng.random() < 0.5 else v.reshape((*v.shape, 1))
            elif kind == "extra_dim":
                new = np.stack([v, v], axis=-1)
            elif kind == "scalar":
                new = np.array(v.reshape(-1)[0])
            else:  # scalar_for_scalar: a scalar saved as (1,) or (2,)
                new = np.array([v]) if rng.random() < 0.5 else np.array([v, v])
            return one(i, new, f"shape_{kind}")

        return make

    def wrong_dtype() -> Mutation:
        i = rng.randrange(n)
        v = values[i]
        choices = ["bool", "complex64", "string"] + (["int32"] if i in floats else [])
        kind = rng.choice(choices)
        if kind == "string":
            new = _string_array(v.shape)
        else:
            new = v.astype(np.float32).astype(kind) if kind != "bool" else (v.astype(np.float32) != 0)
        return one(i, new, f"dtype_{kind}")

    def float_cast() -> Mutation:
        chosen = [i for i in floats if rng.random() < 0.6] or [rng.choice(floats)]
        wider = "float64" if dtype == "float32" or rng.random() < 0.5 else "float32"
        changed = list(values)
        for i in chosen:
            changed[i] = values[i].astype(wider)
        return Mutation(f"{wider}_cast", f"harmless:{wider}_cast", changed, (), f"{len(chosen)} float values")

    def counter_cast() -> Mutation:
        kind = rng.choice(["int32", "integral_float64"])
        changed = list(values)
        for i in counters:
            changed[i] = values[i].astype(np.int32 if kind == "int32" else np.float64)
        return Mutation(f"counter_{kind}", f"harmless:counter_{kind}", changed, (), f"{len(counters)} counters")

    def bad_counter() -> Mutation:
        i = rng.choice(counters)
        bad = rng.choice([np.nan, np.inf, -np.inf, -1.0, -7.0, 2.5, 0.5, 1e30, 2.0**63])
        new = np.array(bad, dtype=np.int64) if bad in (-1.0, -7.0) else np.array(bad, dtype=np.float64)
        return one(i, new, f"counter_{bad}")

    def negative_moment() -> Mutation:
        i = rng.choice(seconds)
        new = values[i].copy()
        flat = new.reshape(-1)
        k = rng.randrange(flat.size)
        flat[k] = -np.inf if rng.random() < 0.2 else -(abs(float(flat[k])) + 1e-3)
        return one(i, new, "negative_second_moment")

    def bad_rate() -> Mutation | None:
        if not rate:
            return None
        i = rate[0]
        return one(i, np.array(rng.choice([np.nan, np.inf, -1e-3]), dtype=values[i].dtype), "learning_rate")

    def missing() -> Mutation:
        i = rng.randrange(n)
        return structural(f"missing_{keys[i]}_{i}", values[:i] + values[i + 1 :])

    def extra() -> Mutation:
        v = values[rng.randrange(n)]
        return structural("extra_variable", [*values, np.zeros_like(v)])

    def truncated() -> Mutation:
        k = rng.randrange(n)
        if route == "keras_store" and k == unbuilt:
            return structural(f"truncated_{k}", values[:k], "harmless:store_saved_before_build")
        if route == "tf_checkpoint" and k == 0:  # no optimizer value at all: TF's partial restore, nothing assigned
            return structural(f"truncated_{k}", values[:k], "harmless:no_optimizer_value_in_checkpoint")
        return structural(f"truncated_{k}", values[:k])

    def other_optimizer() -> Mutation:
        name = rng.choice(sorted(others))
        other = others[name]
        payload = other if route == "tf_checkpoint" else other.values
        return structural(f"state_of_{name}", payload)

    factories: list[Callable[[], Mutation | None]] = [
        reshape("grown"),
        reshape("shrunk"),
        reshape("transposed"),
        reshape("broadcastable"),
        reshape("extra_dim"),
        reshape("scalar"),
        reshape("scalar_for_scalar"),
        wrong_dtype,
        wrong_dtype,
        float_cast,
        counter_cast,
        bad_counter,
        bad_counter,
        negative_moment,
        negative_moment,
        bad_rate,
        missing,
        extra,
        truncated,
        other_optimizer,
        other_optimizer,
    ]
    narrow = [i for i in counters if values[i].dtype.itemsize < 8]  # Keras int32 iterations; int64 on JAX without x64
    if narrow:

        def counter_beyond_storage() -> Mutation:
            i = rng.choice(narrow)
            bad = rng.choice([2**31, 2**32, 2**40, 2**63 - 1])
            new = np.array(bad, dtype=np.int64) if rng.random() < 0.5 else np.array(float(bad), dtype=np.float64)
            return one(i, new, f"counter_{bad}_beyond_{values[i].dtype}")

        factories.append(counter_beyond_storage)
    if route in ("keras_store", "set_weights"):

        def backend_tensors() -> Mutation:  # as a user hands over another optimizer's variables' values
            changed = [keras.ops.convert_to_tensor(v) for v in values]
            return Mutation("backend_tensors", "harmless:backend_tensors", changed, (), "all values")

        factories.append(backend_tensors)
    if route == "keras_store":

        def renamed_key() -> Mutation:
            i = rng.randrange(n)
            store = {str(j): v for j, v in enumerate(values)}
            store["layer" if rng.random() < 0.5 else str(n)] = store.pop(str(i))
            return Mutation("renamed_key", "harmful", store, ("keys",), f"key '{i}'")

        factories.append(renamed_key)
    if route == "set_weights":

        def nested_lists() -> Mutation:
            return Mutation("nested_lists", "harmless:nested_lists", [v.tolist() for v in values], (), "all values")

        factories.append(nested_lists)
    return factories
