"""The shell the Keras optimizers share: one argument check, build, checked ``apply`` and restores, config.

A subclass sets ``_SPEC_ID`` and ``_CONFIG``, calls ``super().__init__(locals(), default_lr)`` first thing in its
``__init__``, creates its state in ``_build_state`` and writes its update in ``update_step``; the formulas it shares
with the others are in ``hf_optim_tf._formulas``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import hf_optim_spec as hs
import keras

from ._checked_restore import CheckedRestore
from ._multi_tensor import update_at_once
from ._optimizer_arguments import check_arguments
from ._rounding import ROUNDING_DOC, check_stochastic_rounding
from ._traced_update import jitted_update, traced_apply
from ._variables import as_list

__all__ = ["SpecOptimizer"]

_PLAIN: Mapping[str, Callable[[Any], Any]] = {
    "number": float,
    "number_pair": float,
    "integer": int,
    "boolean": bool,
    "string": str,
    "string_list": as_list,
}
"""How a checked argument of each spec type is kept (plain Python values, so configs are JSON)."""


def _check_gradient_shapes(grads: Any, variables: Any) -> None:
    """A ValueError naming the variable whose gradient does not fit it, before any variable or state changes.

    Keras applies the gradients one variable at a time and leaves the shape check to the first op that meets the
    gradient, so the variables before it are updated and the step stops halfway (Keras' own optimizers do the same,
    with TensorFlow's "Incompatible shapes" or a broadcast error). The shapes are compared here first, by the rule
    those ops apply: the gradient must broadcast to the variable's shape (each of its dimensions, aligned from the
    last, equal to the variable's or 1; a scalar fits any variable, as Keras takes it). A dimension unknown at trace
    time fits any, and a gradient without a static shape (an unknown rank) is left to the ops. Inside a traced step
    (``model.fit``, ``tf.function``, ``jax.jit``) this runs once, at the trace; an eager step pays about 0.25 µs per
    variable on TensorFlow and 0.12 µs on torch (measured on 200 variables).
    """
    for gradient, variable in zip(grads, variables):
        if gradient is None:
            continue
        want = getattr(variable, "_shape", None)  # (a tuple, which Variable.shape copies at every read)
        if want is None:
            want = tuple(variable.shape)
        shape = getattr(gradient, "shape", None)  # (a tf.IndexedSlices has its dense shape)
        if isinstance(shape, tuple):  # NumPy's, JAX's, torch's torch.Size
            got = shape
        elif getattr(shape, "rank", None) is None:  # a Python number (converted later), an unknown TensorShape
            continue
        else:
            got = tuple(shape.as_list())  # (None for a dimension unknown at trace time)
        if got == want:
            continue
        if len(got) > len(want) or any(g not in (None, 1, w) for g, w in zip(reversed(got), reversed(want))):
            raise ValueError(
                "Argument `grads` must hold one gradient of its variable's shape per variable (or one that broadcasts "
                "to it); nothing was updated. Received: a gradient of shape "
                f"{tuple(got)} for variable {getattr(variable, 'path', variable)!r} of shape {tuple(want)}"
            )


@functools.cache
def _argument_types(spec_id: str) -> dict[str, str]:
    """The spec type of each Keras-spelled argument of ``spec_id`` (both halves of a split pair are numbers)."""
    types: dict[str, str] = {}
    for parameter in hs.get(spec_id).parameters.values():
        alias = parameter.name_for("tf")
        for name in alias if isinstance(alias, tuple) else (alias,):
            types[name] = parameter.type if isinstance(parameter.type, str) else parameter.type[0]
    return types


class SpecOptimizer(CheckedRestore, keras.optimizers.Optimizer):
    """Base of :class:`~hf_optim_tf.AdamW`, :class:`~hf_optim_tf.AdamWeightDecay` and :class:`~hf_optim_tf.Adafactor`.

    Construction: the arguments are checked once (``hf_optim_tf._optimizer_arguments.check_arguments``) and the
    Keras base keywords go to Keras' base optimizer; every argument named in ``_CONFIG`` (and ``stochastic_rounding``,
    ``rounding_seed``) is kept as an attribute of that name (or of its ``_CONFIG_ATTRIBUTES`` name) as a plain value
    of its spec type (None stays None). A class docstring's ``{{rounding_args}}`` line becomes the shared ``Args:``
    text of the two rounding arguments.

    Build: float16 variables with ``stochastic_rounding=True`` are rejected before any state exists; the subclass's
    ``_build_state`` creates the state; a ``tf.train.Checkpoint`` restored before the build is checked then.

    Apply: ``apply_gradients`` with no (gradient, variable) pair raises ValueError (Keras fails with "not enough
    values to unpack"); the same variable twice in one call raises ValueError (Keras would update it twice,
    silently). Both are Python-level checks: inside ``tf.function`` they run once, when the step is traced.
    Keras 3 builds an optimizer lazily inside the first ``apply``. Under ``tf.distribute`` that first call often
    happens in replica context inside a ``tf.function`` (transformers' own ``GradientAccumulator`` test does exactly
    this), where creating the state variables fails. The build is moved to cross-replica context (``merge_call``)
    and out of the traced graph (``tf.init_scope``), so the variables are created once, mirrored, as if ``build`` had
    been called in ``strategy.scope()``.

    Eager steps: on TensorFlow, an ``apply`` from eager code runs its learning rate, clipping and the update of all its
    variables as one traced ``tf.function`` per list of variables (``hf_optim_tf._traced_update``), the same Keras
    and ``update_step`` code, compiled by XLA from iteration ``_XLA_FROM_ITERATION`` on (as a plain
    ``tf.function`` before, and where XLA refuses it). The
    first 10 iterations run op by op (a trace costs as much as 7 to 25 of them). On Keras' torch backend, where a step is not
    traced unless the caller compiles it, the AdamW family updates its float32 variables together with torch's
    multi-tensor ops (``hf_optim_tf._multi_tensor``), bit for bit as ``update_step`` would.

    Weight decay: Keras' base-class decay is not used; each optimizer applies its own in ``update_step``.
    """

    _SPEC_ID: ClassVar[str]
    _CONFIG: ClassVar[tuple[str, ...]]
    """The subclass's own spec parameters (Keras spelling): its attributes and ``get_config`` keys."""
    _CONFIG_ATTRIBUTES: ClassVar[Mapping[str, str]] = {}
    """``get_config`` key -> attribute, where the attribute has another name."""
    _XLA_FROM_ITERATION: ClassVar[int] = 0
    """The iteration from which an eager step's traced function is compiled by XLA (0: from its first traced step, as
    for the AdamW family; Adafactor's first call under XLA costs more: see ``_traced_update``)."""
    _update_lists: Callable[[list[Any], list[Any], Any], None] | None = None
    """``update_step`` for a list of float32 variables at once on the torch backend (``_multi_tensor``), or None."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__doc__:
            cls.__doc__ = cls.__doc__.replace("        {{rounding_args}}", ROUNDING_DOC)

    def __init__(self, arguments: Mapping[str, Any], default_lr: Any) -> None:
        """Check ``arguments`` (the subclass constructor's ``locals()``) and initialise Keras' base optimizer."""
        learning_rate, base_kwargs = check_arguments(self._SPEC_ID, arguments, default_lr, type(self).__name__)
        super().__init__(
            learning_rate=0.0 if learning_rate is None else learning_rate, name=arguments["name"], **base_kwargs
        )
        self._manual_lr = learning_rate is not None
        types = _argument_types(self._SPEC_ID)
        for key in self._config_keys():
            value = arguments[key]
            setattr(self, self._CONFIG_ATTRIBUTES.get(key, key), None if value is None else _PLAIN[types[key]](value))

    def _config_keys(self) -> tuple[str, ...]:
        return (*self._CONFIG, "stochastic_rounding", "rounding_seed")

    def build(self, var_list: list[Any]) -> None:
        """Create the optimizer's state for ``var_list`` (once).

        Raises:
            ValueError: a float16 variable with ``stochastic_rounding=True``.
            ValueError, TypeError: a ``tf.train.Checkpoint`` restored before the build holds state that does not
                fit the variables (checked here, once the state exists; ``hf_optim_tf._state_check``).
        """
        if self.built:
            return
        check_stochastic_rounding(var_list, self.stochastic_rounding)
        super().build(var_list)
        self._build_state(var_list)
        self._finish_build()

    def _build_state(self, var_list: list[Any]) -> None:
        raise NotImplementedError

    def _apply_weight_decay(self, variables: Any) -> None:
        return None  # each optimizer decays in its update_step

    def get_config(self) -> dict[str, Any]:
        """Keras base keys plus every spec parameter in Keras spelling (``learning_rate`` None when not given)."""
        config: dict[str, Any] = super().get_config()
        if not self._manual_lr:
            config["learning_rate"] = None
        for key in self._config_keys():
            config[key] = getattr(self, self._CONFIG_ATTRIBUTES.get(key, key))
        return config

    def _backend_apply_gradients(self, grads: Any, trainable_variables: Any) -> None:
        """Keras' step of every variable (learning rate, clipping, updates); from eager code on TensorFlow, one traced
        call (``._traced_update``), compiled by XLA from ``_XLA_FROM_ITERATION`` on."""
        cache = self.__dict__.setdefault("_traced_updates", {})
        apply = super()._backend_apply_gradients
        traced = traced_apply(
            cache,
            apply,
            grads,
            trainable_variables,
            learning_rate=self._learning_rate,
            iterations=self._iterations,
            xla_from=self._XLA_FROM_ITERATION,
        )
        if traced is None:
            apply(grads, trainable_variables)
        else:
            traced(grads)

    def _backend_update_step(self, grads: Any, trainable_variables: Any, learning_rate: Any) -> None:
        """Keras' update of every variable; from eager code on JAX, one jitted call (``._traced_update``); on torch,
        the float32 variables at once where the class can (``_update_lists``, ``._multi_tensor``)."""
        if self._update_lists is not None:
            grads, trainable_variables = update_at_once(self._update_lists, grads, trainable_variables, learning_rate)
            if not trainable_variables:
                return
        cache = self.__dict__.setdefault("_jitted_updates", {})
        update = super()._backend_update_step
        jitted = jitted_update(cache, update, grads, trainable_variables, self.variables, self._iterations)
        if jitted is None:
            update(grads, trainable_variables, learning_rate)
        else:
            jitted(grads, learning_rate)

    def apply_gradients(self, grads_and_vars: Any) -> Any:
        pairs = list(grads_and_vars)
        if not pairs:
            raise ValueError(
                "Argument `grads_and_vars` must hold at least one (gradient, variable) pair. Received: grads_and_vars=[]"
            )
        return super().apply_gradients(pairs)

    def apply(self, grads: Any, trainable_variables: Any = None) -> Any:
        """Keras' ``apply``, after the checks that refuse a step before anything changes: a variable listed twice, a
        gradient that does not fit its variable (:func:`_check_gradient_shapes`; before Keras overwrites the variables
        with ``overwrite_with_gradient``, its first change)."""
        grads = list(grads)
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
        known = trainable_variables if trainable_variables is not None else getattr(self, "_trainable_variables", None)
        if known is not None:
            _check_gradient_shapes(grads, known)
        built = self.built
        if not built and trainable_variables is not None and keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            replica = tf.distribute.get_replica_context()
            if tf.distribute.has_strategy() and replica is not None:
                replica.merge_call(lambda _strategy, variables=trainable_variables: self._build_eagerly(variables))
        return super().apply(grads, trainable_variables)

    def _build_eagerly(self, variables: list[Any]) -> None:
        import tensorflow as tf

        with tf.init_scope(), keras.name_scope(self.name, caller=self):
            self.build(variables)
