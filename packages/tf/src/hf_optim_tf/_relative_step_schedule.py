r"""Adafactor's relative step size as a Keras schedule: :class:`AdafactorRelativeStepSchedule`.

Naming: transformers' (and ``hf_optim_torch``'s) ``AdafactorSchedule`` is a proxy scheduler that reads the lr back
from a live torch ``Adafactor`` for logging; it computes nothing. This Keras class is something else: the closed form
of that lr (the ``adafactor_relative_step`` spec), a function of the step that needs no optimizer, the Keras twin of
torch's ``get_adafactor_relative_step_schedule``. It was first published as ``hf_optim_tf.AdafactorSchedule``; that
name stays as an alias of this class (existing code keeps working), and the class stays registered for Keras
serialization as ``hf_optim>AdafactorSchedule``, so ``.keras`` files saved before and after the rename load in
either version.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras

from ._schedules import SpecSchedule, checked_config

__all__ = ["AdafactorRelativeStepSchedule", "AdafactorSchedule", "get_adafactor_relative_step_schedule"]


@keras.saving.register_keras_serializable(package="hf_optim", name="AdafactorSchedule")
class AdafactorRelativeStepSchedule(SpecSchedule):
    r"""The learning rate :class:`Adafactor` uses internally, as a function of its step.

    The closed form of the ``adafactor_relative_step`` spec, evaluated at Adafactor's 1-based per-variable step for
    a parameter of root-mean-square ``rms`` (also available as ``AdafactorSchedule``, its first name; unrelated to
    torch's ``AdafactorSchedule`` proxy, see the module docstring):

    .. math::

        \eta(t) = \max(\epsilon_2, \mathrm{rms})^{[\text{scale\_parameter}]}\cdot
        \begin{cases}\min(10^{-6} t\ \text{if warmup\_init else}\ 10^{-2},\ 1/\sqrt{t})
        & \text{relative\_step} \\ \text{lr} & \text{else}\end{cases}

    Args:
        rms: root mean square of the parameter (``Adafactor`` recomputes it every step).
        lr: external lr; must be None when ``relative_step``. Defaults to None.
        scale_parameter: Defaults to True.
        relative_step: Defaults to True.
        warmup_init: Defaults to False.
        eps2: floor of the parameter scale. Defaults to 1e-3.
        name: optional name.
    """

    def __init__(
        self,
        rms: float,
        lr: float | None = None,
        scale_parameter: bool = True,
        relative_step: bool = True,
        warmup_init: bool = False,
        eps2: float = 1e-3,
        name: str | None = None,
    ) -> None:
        arguments = {key: value for key, value in locals().items() if key not in ("self", "__class__", "name")}
        arguments["rms"] = arguments.pop("rms")  # the config lists it last, as it always has
        super().__init__("adafactor_relative_step", None, arguments, name=name)

    def get_config(self) -> dict[str, Any]:
        return {**self.params, "name": self.name}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> AdafactorRelativeStepSchedule:
        """The schedule of a :meth:`get_config` dict (its fields checked, see ``SpecSchedule.from_config``)."""
        return cls(**checked_config(cls, config))


AdafactorSchedule = AdafactorRelativeStepSchedule
"""The first name of :class:`AdafactorRelativeStepSchedule`, kept as an alias (see the module docstring)."""


def get_adafactor_relative_step_schedule(
    rms: float,
    lr: float | None = None,
    scale_parameter: bool = True,
    relative_step: bool = True,
    warmup_init: bool = False,
    eps2: float = 1e-3,
) -> AdafactorRelativeStepSchedule:
    """The ``adafactor_relative_step`` spec schedule (:class:`AdafactorRelativeStepSchedule`) by its factory name."""
    return AdafactorRelativeStepSchedule(**locals())
