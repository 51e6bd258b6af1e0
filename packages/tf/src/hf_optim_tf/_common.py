"""Helpers shared by the Keras optimizer shells: spec validation, legacy kwargs, variable paths,
and the parameter store (round to nearest, or stochastically to bfloat16)."""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import hf_optim_spec as hs
import keras
from hf_optim_spec.rounding import MASK32, fmix32, rounding_bits, rounding_key
from keras import ops

__all__ = [
    "ROUNDING_DOC",
    "CheckedApply",
    "as_list",
    "check_stochastic_rounding",
    "compute_dtype",
    "matches_any",
    "numpy_value",
    "one_minus_power",
    "parameter_rounding_key",
    "pop_legacy_kwargs",
    "round_stochastic_bfloat16",
    "slot_name",
    "split_kwargs",
    "store_parameter",
    "validate_optimizer",
    "variable_path",
]

_NOT_A_NUMBER_LR = (keras.optimizers.schedules.LearningRateSchedule,)


def validate_optimizer(spec_id: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """Validate Keras-spelled optimizer arguments against the spec; returns canonical names.

    A learning rate that is a schedule or a callable is checked by Keras' base class instead
    (the spec types ``lr`` as a number): the spec check sees a stand-in of 1.0, so rules that
    only ask whether a manual lr is set (Adafactor's ``relative_step``) still apply.
    """
    checked = dict(arguments)
    spec = hs.get(spec_id)
    lr_name = str(spec.parameters["lr" if "lr" in spec.parameters else "learning_rate"].name_for("tf"))
    lr = checked.get(lr_name)
    if isinstance(lr, _NOT_A_NUMBER_LR) or (callable(lr) and not isinstance(lr, (int, float))):
        checked[lr_name] = 1.0
    return hs.validate(spec_id, checked, framework="tf")


KERAS_BASE_KWARGS = frozenset(
    {
        "clipnorm",
        "clipvalue",
        "global_clipnorm",
        "use_ema",
        "ema_momentum",
        "ema_overwrite_frequency",
        "loss_scale_factor",
        "gradient_accumulation_steps",
    }
)
"""Keyword arguments forwarded to Keras' base optimizer."""


def pop_legacy_kwargs(kwargs: dict[str, Any], learning_rate: Any, default_lr: Any, owner: str) -> Any:
    """Handle tf.keras 2 (legacy optimizer) keyword arguments that Keras 3 dropped.

    * ``lr``: the legacy alias of ``learning_rate``; mapped to it (DeprecationWarning). Passing
      both ``lr`` and a non-default ``learning_rate`` is a ValueError.
    * ``decay``: legacy inverse-time decay of the lr. ``0``/``None`` are accepted and ignored;
      any other value is a ValueError pointing at ``keras.optimizers.schedules.InverseTimeDecay``
      (Keras 3 itself would silently ignore it).
    * ``weight_decay=None`` (Keras' base-class key, present in every Keras optimizer config) is
      dropped; a value is left in ``kwargs`` for the spec check, which rejects it as unknown
      where the optimizer has no such parameter.

    Returns:
      The learning rate to use (ints become floats, as Keras requires).
    """
    if "lr" in kwargs:
        lr = kwargs.pop("lr")
        if learning_rate is not default_lr and learning_rate != default_lr:
            raise ValueError(
                f"{owner}: pass the learning rate once, as `learning_rate`. "
                f"Received: lr={lr!r} and learning_rate={learning_rate!r}"
            )
        warnings.warn(
            f"{owner}: the `lr` argument is deprecated; use `learning_rate`.", DeprecationWarning, stacklevel=3
        )
        learning_rate = lr
    decay = kwargs.pop("decay", None)
    if decay not in (None, 0, 0.0):
        raise ValueError(
            f"{owner}: the legacy `decay` argument is not supported by Keras 3 optimizers. Pass "
            "`learning_rate=keras.optimizers.schedules.InverseTimeDecay(lr, decay_steps=1, "
            f"decay_rate=decay)` for the same learning rate. Received: decay={decay!r}"
        )
    if "weight_decay" in kwargs and kwargs["weight_decay"] is None:
        kwargs.pop("weight_decay")
    if isinstance(learning_rate, int) and not isinstance(learning_rate, bool):
        learning_rate = float(learning_rate)
    return learning_rate


def split_kwargs(
    kwargs: dict[str, Any], spec_keys: frozenset[str] = frozenset()
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(keras_base_kwargs, others)``; ``others`` go to the spec check (unknown -> TypeError).
    Base keys that are also spec parameters (``spec_keys``) are returned in both."""
    base = {k: v for k, v in kwargs.items() if k in KERAS_BASE_KWARGS}
    others = {k: v for k, v in kwargs.items() if k not in KERAS_BASE_KWARGS or k in spec_keys}
    return base, others


def variable_path(variable: Any) -> str:
    """The full name weight-decay patterns are matched against: ``variable.path`` (Keras 3),
    falling back to ``variable.name`` for plain ``tf.Variable`` objects."""
    path = getattr(variable, "path", None)
    if path:
        return str(path)
    return str(getattr(variable, "name", ""))


def matches_any(patterns: Iterable[str] | None, name: str) -> bool:
    """True when one of the regexes matches anywhere in ``name`` (``re.search``)."""
    return any(re.search(pattern, name) is not None for pattern in patterns or ())


def compute_dtype(variable_dtype: str) -> str:
    """The dtype the update math runs in: float32 for 16-bit variables, else the variable's."""
    return "float32" if variable_dtype in ("float16", "bfloat16") else variable_dtype


ROUNDING_DOC = """\
        stochastic_rounding: store bfloat16 variables with stochastic rounding of the float32
            result of the step instead of rounding to nearest (unbiased: updates below half a
            bfloat16 ulp still move the variable on average). The random bits are a hash of
            ``(rounding_seed, variable index, step, element position)``
            (``hf_optim_spec.rounding``), not a framework RNG: a run is reproducible, resumes
            exactly from a checkpoint and rounds like the torch port. State tensors are rounded
            to nearest. float32/float64 variables: no effect. float16 variables: ValueError in
            ``build`` (only bfloat16 is defined). Defaults to False.
        rounding_seed: seed of the stochastic-rounding bits, ``0 <= rounding_seed < 2**32``;
            runs with the same seed round identically. Defaults to 0."""
"""The ``Args:`` text of ``stochastic_rounding`` and ``rounding_seed``, shared by the optimizers' docstrings."""


def check_stochastic_rounding(var_list: Sequence[Any], stochastic_rounding: bool) -> None:
    """Reject float16 variables when stochastic rounding is on (called in ``build``, before any
    state is created or any variable changes).

    Raises:
      ValueError: a float16 variable with ``stochastic_rounding=True``.
    """
    if not stochastic_rounding:
        return
    for index, variable in enumerate(var_list):
        if str(variable.dtype) == "float16":
            raise ValueError(
                "`stochastic_rounding=True` supports bfloat16 parameters; got a float16 parameter "
                f"(index {index}, {variable_path(variable)!r})"
            )


def round_stochastic_bfloat16(x: Any, key: Any) -> Any:
    """Round float32 values ``x`` stochastically to bfloat16 with the bits of rounding ``key``.

    The Keras twin of ``hf_optim_spec.rounding.round_stochastic``: the 16 random bits of each element
    (``rounding_bits(key, position)``, positions are the row-major flat indices) are added to the low
    half of the float32 bit pattern and the low half is dropped, so the result rounds away from zero
    with probability (dropped bits) / 2**16. Integer ops only (no float arithmetic, so flush-to-zero
    cannot touch subnormals); NaN stays NaN (its quiet bit is set), infinities stay infinite.

    Args:
      x: a float32 tensor of static shape.
      key: ``hf_optim_spec.rounding.rounding_key(seed, index, step)``, an int or an int64 tensor (uint32 on JAX).

    Returns:
      A bfloat16 tensor of the shape of ``x``.
    """
    x = ops.cast(x, "float32")
    shape = tuple(x.shape)
    if _uint32_hash():
        positions = ops.reshape(ops.arange(math.prod(shape), dtype="uint32"), shape)
        bits = ops.cast(_rounding_bits_uint32(key, positions), "int32")  # in [0, 65536)
    else:
        positions = ops.reshape(ops.arange(math.prod(shape), dtype="int64"), shape)
        bits = ops.cast(rounding_bits(key, positions), "int32")  # in [0, 65536)
    pattern = _bitcast(x, "int32")
    # Only a positive NaN's pattern can overflow int32 here, and NaN is replaced below.
    high = ops.right_shift(ops.bitwise_and(ops.add(pattern, bits), -65536), 16)
    is_nan = ops.greater(ops.bitwise_and(pattern, 0x7FFFFFFF), 0x7F800000)
    high = ops.where(is_nan, ops.bitwise_or(ops.right_shift(pattern, 16), 0x40), high)
    return _bitcast(ops.cast(high, "int16"), "bfloat16")


def _bitcast(x: Any, dtype: str) -> Any:
    """``x``'s bits reinterpreted as ``dtype`` of the same width (``keras.ops.view`` where Keras has it)."""
    view = getattr(ops, "view", None)
    if view is not None:
        return view(x, dtype)
    backend = keras.backend.backend()  # pragma: no cover - Keras before ops.view
    if backend == "tensorflow":  # pragma: no cover
        import tensorflow as tf

        return tf.bitcast(x, getattr(tf, dtype))
    if backend == "jax":  # pragma: no cover
        import jax

        return jax.lax.bitcast_convert_type(x, dtype)
    if backend == "torch":  # pragma: no cover
        import torch

        return x.view(getattr(torch, dtype))
    raise NotImplementedError(  # pragma: no cover
        f"stochastic rounding needs a bitcast; Keras {keras.__version__} has no `keras.ops.view` and the "
        f"{backend!r} backend is not one of tensorflow, jax, torch. Upgrade Keras."
    )


def _uint32_hash() -> bool:
    """Whether the rounding hash runs in uint32 (wrapping multiply) instead of int64: on JAX, whose int64 is
    int32 unless ``jax_enable_x64`` is set (the int64 route would overflow). Both give the same bits."""
    return keras.backend.backend() == "jax"


def _fmix32_uint32(h: Any) -> Any:
    """``hf_optim_spec.rounding.fmix32`` on a uint32 tensor: shifts and the wrapping uint32 multiply."""
    c1 = ops.convert_to_tensor(0x85EBCA6B, dtype="uint32")
    c2 = ops.convert_to_tensor(0xC2B2AE35, dtype="uint32")
    h = ops.bitwise_xor(h, ops.right_shift(h, 16))
    h = ops.multiply(h, c1)
    h = ops.bitwise_xor(h, ops.right_shift(h, 13))
    h = ops.multiply(h, c2)
    return ops.bitwise_xor(h, ops.right_shift(h, 16))


def _rounding_key_uint32(seed: int, index: int, step: Any) -> Any:
    """``hf_optim_spec.rounding.rounding_key`` as a uint32 tensor (the ``(seed, index)`` part in Python ints)."""
    partial = fmix32(fmix32(seed & MASK32) ^ (index & MASK32))
    step32 = ops.cast(step, "uint32")  # steps are below 2**31; the key takes step mod 2**32 anyway
    return _fmix32_uint32(ops.bitwise_xor(ops.convert_to_tensor(partial, dtype="uint32"), step32))


def _rounding_bits_uint32(key: Any, positions: Any) -> Any:
    """``hf_optim_spec.rounding.rounding_bits`` for a uint32 key and uint32 positions."""
    if isinstance(key, int):
        key = ops.convert_to_tensor(key & MASK32, dtype="uint32")
    return ops.right_shift(_fmix32_uint32(ops.bitwise_xor(positions, ops.cast(key, "uint32"))), 16)


def store_parameter(value: Any, dtype: str, stochastic_key: Any = None) -> Any:
    """The new value of a variable of ``dtype`` from its float32 (or wider) result: rounded to nearest,
    or stochastically (:func:`round_stochastic_bfloat16`) when ``dtype`` is bfloat16 and a key is given."""
    if stochastic_key is not None and dtype == "bfloat16":
        return round_stochastic_bfloat16(value, stochastic_key)
    return ops.cast(value, dtype)


def parameter_rounding_key(seed: int, index: int, step: Any) -> Any:
    """``hf_optim_spec.rounding.rounding_key`` for the variable at ``index`` at ``step`` (an int64 tensor; a
    uint32 tensor on JAX, see :func:`_uint32_hash`)."""
    if _uint32_hash():
        return _rounding_key_uint32(seed, index, step)
    return rounding_key(seed, index, ops.cast(step, "int64"))


def one_minus_power(beta: float, step: Any) -> Any:
    """``1 - beta ** step`` for a Python float ``beta`` and a float64 ``step`` tensor, in float64.

    ``beta`` enters as a float64 tensor (the torch backend would otherwise convert the Python float to float32
    first). JAX without ``jax_enable_x64`` computes in float32, where ``1 - 0.999 ** 1`` loses four digits to
    cancellation; there it is ``-expm1(step * log(beta))`` with ``log(beta)`` taken in Python float64."""
    if keras.backend.standardize_dtype(step.dtype) != "float64":
        if beta == 0.0:  # 0 ** step == 0 from the first step on
            return ops.ones_like(step)
        return ops.negative(ops.expm1(ops.multiply(step, math.log(beta))))
    return 1.0 - ops.power(ops.convert_to_tensor(beta, dtype="float64"), step)


def as_list(value: Sequence[str] | None) -> list[str] | None:
    """A JSON-friendly copy of a pattern list (None stays None)."""
    return None if value is None else [str(v) for v in value]


def slot_name(variable: Any) -> str:
    """A variable-name prefix for optimizer state, derived from the model variable's path."""
    return variable_path(variable).replace("/", "_").replace(":", "_") or "var"


def numpy_value(value: Any) -> Any:
    """A NumPy copy of a variable or tensor (through a tensor: NumPy 2 warns on tf.Variable)."""
    if isinstance(value, keras.Variable) and keras.backend.backend() != "tensorflow":
        return keras.ops.convert_to_numpy(value.value)  # Variable.numpy() is np.array(variable): NumPy 2 warns
    numpy = getattr(value, "numpy", None)
    return numpy() if numpy is not None else keras.ops.convert_to_numpy(value)


class CheckedApply:
    """Mixin of the optimizers: check the variables given to ``apply``, and build outside the replica function.

    Checks: ``apply_gradients`` with no (gradient, variable) pair raises ValueError (Keras fails with "not enough
    values to unpack"); the same variable twice in one call raises ValueError (Keras would update it twice,
    silently). Both are Python-level checks: inside ``tf.function`` they run once, when the step is traced.

    Build: Keras 3 builds an optimizer lazily inside the first ``apply``. Under ``tf.distribute`` that first call
    often happens in replica context inside a ``tf.function`` (transformers' own ``GradientAccumulator`` test does
    exactly this), where creating the state variables fails. This mixin moves the build to cross-replica context
    (``merge_call``) and out of the traced graph (``tf.init_scope``), so the variables are created once, mirrored,
    as if ``build`` had been called in ``strategy.scope()``.
    """

    def apply_gradients(self, grads_and_vars: Any) -> Any:
        pairs = list(grads_and_vars)
        if not pairs:
            raise ValueError(
                "Argument `grads_and_vars` must hold at least one (gradient, variable) pair. Received: grads_and_vars=[]"
            )
        return super().apply_gradients(pairs)  # type: ignore[misc]

    def apply(self, grads: Any, trainable_variables: Any = None) -> Any:
        if trainable_variables is not None:
            trainable_variables = list(trainable_variables)
            seen: set[int] = set()
            for variable in trainable_variables:
                if id(variable) in seen:
                    raise ValueError(
                        "Argument `trainable_variables` must not hold a variable twice (it would be updated twice). "
                        f"Received: {getattr(variable, 'path', variable)!r} twice"
                    )
                seen.add(id(variable))
        built = self.built  # type: ignore[attr-defined]
        if not built and trainable_variables is not None and keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            replica = tf.distribute.get_replica_context()
            if tf.distribute.has_strategy() and replica is not None:
                replica.merge_call(lambda _strategy, variables=trainable_variables: self._build_eagerly(variables))
        return super().apply(grads, trainable_variables)  # type: ignore[misc]

    def _build_eagerly(self, variables: list[Any]) -> None:
        import tensorflow as tf

        with tf.init_scope(), keras.name_scope(self.name, caller=self):  # type: ignore[attr-defined]
            self.build(variables)  # type: ignore[attr-defined]
