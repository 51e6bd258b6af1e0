"""transformers' TensorFlow schedules as torch twins: WarmUp, PolynomialDecay and create_optimizer."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import hf_optim_spec

from ._adam_weight_decay import AdamWeightDecay
from ._lr_schedulers import SpecLR
from ._spec_factor import SpecFactor, validated_factor

__all__ = ["PolynomialDecay", "WarmUp", "create_optimizer"]


class _ConfigurableSchedule(SpecFactor):
    """A spec "lr" schedule with a Keras-style constructor, ``get_config`` and ``from_config``."""

    _SPEC_ID = ""

    def __init__(self, **kwargs: Any) -> None:
        validated = hf_optim_spec.validate(self._SPEC_ID, kwargs, framework="torch")
        super().__init__(self._SPEC_ID, validated)
        self.bind_validated(validated)

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments (nested schedules as objects again)."""
        return {name: _materialize(value) for name, value in self.params.items()}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> _ConfigurableSchedule:
        return cls(**config)


def _constructor_arguments(frame_locals: Mapping[str, Any]) -> dict[str, Any]:
    """A constructor's own arguments, from its ``locals()`` taken first thing."""
    return {key: value for key, value in frame_locals.items() if key not in ("self", "__class__")}


def _materialize(value: Any) -> Any:
    if isinstance(value, Mapping) and "schedule" in value:
        spec = hf_optim_spec.get(value["schedule"])
        target = _SCHEDULE_CLASSES.get(spec.id)
        if target is not None:
            return target(**{k: _materialize(v) for k, v in value.get("params", {}).items()})
        return SpecFactor(spec.id, value.get("params", {}), value.get("base_lr"))
    return value


class WarmUp(_ConfigurableSchedule):
    """Applies a warmup schedule on a given learning rate decay schedule (transformers' TF ``WarmUp``, in torch).

    A picklable callable ``step -> lr``: ``initial_learning_rate * (step / warmup_steps) ** power`` while
    ``step < warmup_steps``, then ``decay_schedule_fn(step - warmup_steps)``. Use it with :class:`SpecLR` (or
    :func:`create_optimizer`) to drive a torch optimizer's lr. When ``decay_schedule_fn`` is a spec schedule
    (:class:`PolynomialDecay`, another :class:`WarmUp`, a :class:`SpecFactor`), the object is plain data and its
    scheduler's ``state_dict`` loads with ``torch.load(weights_only=True)``.

    Args:
        initial_learning_rate (`float`): The learning rate at the end of the warmup.
        decay_schedule_fn (`Callable`): The schedule function to apply after the warmup for the rest of training.
        warmup_steps (`int`): The number of steps for the warmup part of training.
        power (`float`, *optional*, defaults to 1.0): The power of the polynomial warmup (1.0: linear).
        name (`str`, *optional*): Kept for compatibility (no effect).
    """

    _SPEC_ID = "warmup"

    def __init__(
        self,
        initial_learning_rate: float,
        decay_schedule_fn: Callable[[Any], Any],
        warmup_steps: int,
        power: float = 1.0,
        name: str | None = None,
    ) -> None:
        super().__init__(**_constructor_arguments(locals()))


class PolynomialDecay(_ConfigurableSchedule):
    """Keras' ``PolynomialDecay`` (as transformers' ``create_optimizer`` uses it), in torch.

    A picklable callable ``step -> lr`` decaying from ``initial_learning_rate`` to ``end_learning_rate`` over
    ``decay_steps`` with the given ``power``; with ``cycle`` the decay restarts, stretched to the next multiple
    of ``decay_steps``.

    Args:
        initial_learning_rate (`float`): The learning rate at step 0.
        decay_steps (`int`): Steps to reach ``end_learning_rate`` (> 0).
        end_learning_rate (`float`, *optional*, defaults to 1e-4): The final learning rate.
        power (`float`, *optional*, defaults to 1.0): The power of the polynomial.
        cycle (`bool`, *optional*, defaults to `False`): Whether to cycle beyond ``decay_steps``.
        name (`str`, *optional*, defaults to `"PolynomialDecay"`): Kept for compatibility (no effect).
    """

    _SPEC_ID = "polynomial_decay"

    def __init__(
        self,
        initial_learning_rate: float,
        decay_steps: int,
        end_learning_rate: float = 0.0001,
        power: float = 1.0,
        cycle: bool = False,
        name: str = "PolynomialDecay",
    ) -> None:
        super().__init__(**_constructor_arguments(locals()))


_SCHEDULE_CLASSES: dict[str, type[_ConfigurableSchedule]] = {
    WarmUp._SPEC_ID: WarmUp,
    PolynomialDecay._SPEC_ID: PolynomialDecay,
}

_DEFAULT_EXCLUDE = ["LayerNorm", "layer_norm", "bias"]


def create_optimizer(
    params: Iterable[Any],
    init_lr: float,
    num_train_steps: int,
    num_warmup_steps: int,
    min_lr_ratio: float = 0.0,
    adam_beta1: float = 0.9,
    adam_beta2: float = 0.999,
    adam_epsilon: float = 1e-8,
    adam_clipnorm: float | None = None,
    adam_global_clipnorm: float | None = None,
    weight_decay_rate: float = 0.0,
    power: float = 1.0,
    include_in_weight_decay: list[str] | None = None,
) -> tuple[AdamWeightDecay, SpecLR]:
    """Creates an optimizer with a learning rate schedule: a linear warmup, then a polynomial decay.

    The torch twin of transformers' TF ``create_optimizer``: the same schedule (spec ``create_optimizer``:
    ``PolynomialDecay(init_lr, num_train_steps - num_warmup_steps, init_lr * min_lr_ratio, power)`` in a linear
    :class:`WarmUp` when ``num_warmup_steps != 0``) and the same optimizer (:class:`AdamWeightDecay`; with
    ``weight_decay_rate > 0`` it excludes ``LayerNorm``, ``layer_norm`` and ``bias`` parameters unless
    ``include_in_weight_decay`` matches; with 0 it is plain Keras Adam). Step the returned scheduler after each
    ``optimizer.step()``; it sets the absolute lr, read at the 0-based optimizer iteration as Keras does.

    Args:
        params (`Iterable`): ``model.named_parameters()`` (names are needed when ``weight_decay_rate > 0``), or
            parameters / param groups.
        init_lr (`float`): The peak learning rate, reached when the warmup ends.
        num_train_steps (`int`): How many optimizer steps the whole run takes (the end of the decay).
        num_warmup_steps (`int`): Steps of the linear ramp from 0 to ``init_lr``.
        min_lr_ratio (`float`, *optional*, defaults to 0): The final lr is ``init_lr * min_lr_ratio``.
        adam_beta1 (`float`, *optional*, defaults to 0.9): Decay rate of Adam's first moment.
        adam_beta2 (`float`, *optional*, defaults to 0.999): Decay rate of Adam's second moment.
        adam_epsilon (`float`, *optional*, defaults to 1e-8): Added to ``sqrt(v)`` in Adam's update.
        adam_clipnorm (`float`, *optional*): Clip the gradient norm of each weight tensor to this value.
        adam_global_clipnorm (`float`, *optional*): Clip the joint gradient norm to this value.
        weight_decay_rate (`float`, *optional*, defaults to 0): Decoupled weight decay (0: none).
        power (`float`, *optional*, defaults to 1.0): Exponent of the polynomial decay after the warmup (1: linear).
        include_in_weight_decay (`list[str]`, *optional*): Regexes of parameter names to decay (by default every
            parameter except bias and layer norm parameters).

    Returns:
        ``(optimizer, lr_scheduler)``: an :class:`AdamWeightDecay` and a :class:`SpecLR` whose ``lr_lambdas[0]``
        is the schedule (a picklable :class:`SpecFactor` of spec ``create_optimizer``).
    """
    schedule = validated_factor("create_optimizer", {key: value for key, value in locals().items() if key != "params"})
    decay = weight_decay_rate > 0.0
    optimizer = AdamWeightDecay(
        params,
        learning_rate=init_lr,
        beta_1=adam_beta1,
        beta_2=adam_beta2,
        epsilon=adam_epsilon,
        weight_decay_rate=weight_decay_rate,
        include_in_weight_decay=include_in_weight_decay if decay else None,
        exclude_from_weight_decay=list(_DEFAULT_EXCLUDE) if decay else None,
        clipnorm=adam_clipnorm,
        global_clipnorm=adam_global_clipnorm,
    )
    return optimizer, SpecLR(optimizer, schedule)
