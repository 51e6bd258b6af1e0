"""Adafactor with transformers' (torch) numerics, as a Keras 3 optimizer."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import keras
from keras import ops

from . import _multi_tensor
from ._formulas import (
    adafactor_beta2t,
    adafactor_direction,
    adafactor_factors,
    adafactor_parameter,
    adafactor_rho,
    adafactor_second_moment,
    adafactor_squared,
    adafactor_step_size,
    adafactor_unclipped,
    clip_divisor,
    decay_coefficient,
    rms,
)
from ._multi_tensor import ForeachOps, assign_all, in_batches, increment, tensors
from ._rounding import parameter_rounding_key, store_parameter
from ._spec_optimizer import SpecOptimizer
from ._sums import KERAS_OPS
from ._torch_ops import FlatOps, PieceOps
from ._traced_update import ADAFACTOR_XLA_ITERATIONS
from ._variables import compute_dtype, numpy_value, slot_name

__all__ = ["Adafactor"]


@keras.saving.register_keras_serializable(package="hf_optim")
class Adafactor(SpecOptimizer):
    r"""Adafactor exactly as transformers' torch ``Adafactor`` computes it (the Keras twin).

    For a variable of rank >= 2 the second moment is factored over the last two dimensions
    (``exp_avg_sq_row`` has the shape without the last dimension, ``exp_avg_sq_col`` the shape
    without the second-to-last); other variables keep a full ``exp_avg_sq``.

    .. math::

        \begin{aligned}
        &t \leftarrow t + 1 \quad\text{(per variable)}, \qquad
            \mathrm{RMS}(x) = \lVert x \rVert_2 / \sqrt{\mathrm{numel}(x)} \\
        &\rho_t = \min(10^{-6} t\ \text{if warmup\_init else}\ 10^{-2},\ 1/\sqrt{t})
            \ \text{if relative\_step else}\ \eta \\
        &\alpha_t = \max(\epsilon_2, \mathrm{RMS}(\theta))\,\rho_t\ \text{if scale\_parameter else}\ \rho_t \\
        &\hat\beta_{2t} = 1 - t^{\text{decay\_rate}}, \qquad u = g^2 + \epsilon_1 \\
        &R \leftarrow \hat\beta_{2t} R + (1-\hat\beta_{2t})\,\mathrm{mean}_{-1}(u), \quad
         C \leftarrow \hat\beta_{2t} C + (1-\hat\beta_{2t})\,\mathrm{mean}_{-2}(u) \\
        &U = g \,/\, \sqrt{(R / \mathrm{mean}_{-1} R)\,C}
            \quad\text{(factored; else } V \leftarrow \hat\beta_{2t} V + (1-\hat\beta_{2t}) u,\ U = g/\sqrt V) \\
        &U \leftarrow \alpha_t\, U / \max(1, \mathrm{RMS}(U)/d) \\
        &m \leftarrow \beta_1 m + (1-\beta_1) U,\ U \leftarrow m \quad\text{(if } \beta_1 \text{ is set)} \\
        &\theta \leftarrow \theta - \lambda\,\alpha_t\,\theta \quad\text{(if } \lambda \ne 0), \qquad
         \theta \leftarrow \theta - U
        \end{aligned}

    16-bit variables (float16, bfloat16) are updated in float32 and the state is kept in
    float32 (torch upcasts the gradient and the parameter and keeps the state like the
    upcast gradient); the result is rounded back to the variable dtype once per step, to nearest
    or, for bfloat16 with ``stochastic_rounding=True``, stochastically (keyed by the variable's
    index in the built variable list and its own ``step`` after the increment). There is no
    ``fp32_math`` argument: Adafactor always computes 16-bit variables in float32.

    Args:
        learning_rate: external learning rate (torch: ``lr``); must be None when
            ``relative_step=True``. Defaults to None.
        epsilon_1: regularisation of the squared gradient (torch: ``eps[0]``). Defaults to 1e-30.
        epsilon_2: floor of the parameter scale (torch: ``eps[1]``). Defaults to 1e-3.
        clip_threshold: threshold :math:`d` of the update RMS. Defaults to 1.0.
        decay_rate: exponent of the second-moment decay. Defaults to -0.8.
        beta_1: first-moment decay (torch: ``beta1``); None disables the first moment.
            Defaults to None.
        weight_decay: weight decay :math:`\lambda`. Defaults to 0.0.
        scale_parameter: scale the step by the parameter RMS. Defaults to True.
        relative_step: use the time-dependent step :math:`\rho_t`. Defaults to True.
        warmup_init: warm-up form of :math:`\rho_t`. Defaults to False.
        first_moment: ``"lr_scaled"`` (transformers: the first moment averages the lr-scaled
            update) or ``"unscaled"`` (extension: it averages the clipped update and the average
            is scaled by the current lr). Defaults to ``"lr_scaled"``.
        {{rounding_args}}
        name: optimizer name. Defaults to ``"Adafactor"``.
        **kwargs: Keras base-optimizer arguments.

    Differences from transformers:
        None in the numerics with the defaults. With ``learning_rate=None`` the Keras
        ``learning_rate`` attribute holds 0.0 (it is not used); ``get_config`` reports None.
        ``stochastic_rounding`` and ``rounding_seed`` are extensions.

    Raises:
        TypeError, ValueError: the spec's uniform errors for bad hyperparameters.
        ValueError: in ``build`` (so on the first ``apply``), a float16 variable with
            ``stochastic_rounding=True``.

    References:
        Shazeer & Stern, Adafactor: Adaptive Learning Rates with Sublinear Memory Cost,
        https://arxiv.org/abs/1804.04235

    Example:
        >>> opt = Adafactor(learning_rate=1e-3, scale_parameter=False, relative_step=False)
        >>> bf16 = Adafactor(stochastic_rounding=True, rounding_seed=1)  # for bfloat16 variables
    """

    _SPEC_ID = "adafactor"
    _XLA_FROM_ITERATION = ADAFACTOR_XLA_ITERATIONS  # its first call under XLA costs twice a plain trace's
    _CONFIG = (
        "epsilon_1",
        "epsilon_2",
        "clip_threshold",
        "decay_rate",
        "beta_1",
        "weight_decay",
        "scale_parameter",
        "relative_step",
        "warmup_init",
        "first_moment",
    )
    _CONFIG_ATTRIBUTES: ClassVar[Mapping[str, str]] = {"weight_decay": "decoupled_weight_decay"}

    def __init__(
        self,
        learning_rate: float | keras.optimizers.schedules.LearningRateSchedule | None = None,
        epsilon_1: float = 1e-30,
        epsilon_2: float = 1e-3,
        clip_threshold: float = 1.0,
        decay_rate: float = -0.8,
        beta_1: float | None = None,
        weight_decay: float = 0.0,
        scale_parameter: bool = True,
        relative_step: bool = True,
        warmup_init: bool = False,
        first_moment: str = "lr_scaled",
        stochastic_rounding: bool = False,
        rounding_seed: int = 0,
        name: str = "Adafactor",
        **kwargs: Any,
    ) -> None:
        super().__init__(locals(), None)
        self._piece_ops: PieceOps | None = None  # on the torch backend, made by the first ``_update_lists``

    def _build_state(self, var_list: list[Any]) -> None:
        """Per variable: ``step``, ``RMS``, ``exp_avg`` (with beta1), and the factored ``exp_avg_sq_row`` /
        ``exp_avg_sq_col`` (rank >= 2) or a full ``exp_avg_sq``."""
        self._step: list[Any] = []
        self._exp_avg: list[Any] = []
        self._row: list[Any] = []
        self._col: list[Any] = []
        self._full: list[Any] = []
        self._rms: list[Any] = []
        for variable in var_list:
            base = slot_name(variable)
            shape = tuple(variable.shape)
            dtype = compute_dtype(variable.dtype)
            self._step.append(self.add_variable(shape=(), dtype="int64", name=f"{base}_step"))
            self._rms.append(self.add_variable(shape=(), dtype=dtype, name=f"{base}_RMS"))
            self._exp_avg.append(
                self.add_variable(shape=shape, dtype=dtype, name=f"{base}_exp_avg") if self.beta_1 is not None else None
            )
            if len(shape) >= 2:
                self._row.append(self.add_variable(shape=shape[:-1], dtype=dtype, name=f"{base}_exp_avg_sq_row"))
                self._col.append(
                    self.add_variable(shape=shape[:-2] + shape[-1:], dtype=dtype, name=f"{base}_exp_avg_sq_col")
                )
                self._full.append(None)
            else:
                self._row.append(None)
                self._col.append(None)
                self._full.append(self.add_variable(shape=shape, dtype=dtype, name=f"{base}_exp_avg_sq"))

    def _state_slots(self) -> Iterator[tuple[Any, Any, str]]:
        for index, variable in enumerate(self._trainable_variables):
            yield self._step[index], variable, "step"
            yield self._rms[index], variable, "RMS"
            yield self._exp_avg[index], variable, "exp_avg"
            yield self._row[index], variable, "exp_avg_sq_row"
            yield self._col[index], variable, "exp_avg_sq_col"
            yield self._full[index], variable, "exp_avg_sq"

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        """One Adafactor step for one variable (keras.ops only)."""
        index = self._get_variable_index(variable)
        dtype = compute_dtype(variable.dtype)
        grad = ops.cast(gradient, dtype)
        param = ops.cast(variable, dtype)
        step_var = self._step[index]
        self.assign_add(step_var, ops.ones((), dtype="int64"))
        step = ops.cast(step_var, "float64")
        param_rms = rms(param)
        self.assign(self._rms[index], param_rms)
        rho, keep, mix = self._step_scalars(step, learning_rate, dtype)
        alpha = adafactor_step_size(rho, param_rms, scale_parameter=self.scale_parameter, epsilon_2=self.epsilon_2)
        update, row, col, full = adafactor_direction(
            KERAS_OPS,
            grad,
            self._row[index],
            self._col[index],
            self._full[index],
            keep=keep,
            mix=mix,
            epsilon_1=ops.convert_to_tensor(self.epsilon_1, dtype=dtype),
            clip_threshold=self.clip_threshold,
        )
        for state, value in ((self._row[index], row), (self._col[index], col), (self._full[index], full)):
            if state is not None:
                self.assign(state, value)
        decay = None
        if self.decoupled_weight_decay != 0.0:
            decay = decay_coefficient(alpha, self.decoupled_weight_decay, dtype)
        param, exp_avg = adafactor_parameter(
            KERAS_OPS,
            param,
            update,
            self._exp_avg[index],
            alpha=ops.cast(alpha, dtype),
            beta_1=self.beta_1,
            first_moment=self.first_moment,
            decay=decay,
        )
        if exp_avg is not None:
            self.assign(self._exp_avg[index], exp_avg)
        key = None
        if self.stochastic_rounding and variable.dtype == "bfloat16":
            key = parameter_rounding_key(self.rounding_seed, index, step_var)
        self.assign(variable, store_parameter(param, variable.dtype, key))

    def _step_scalars(self, step: Any, learning_rate: Any, dtype: str) -> tuple[Any, Any, Any]:
        """:math:`\\rho_t` (float64), :math:`\\hat\\beta_{2t}` and :math:`1-\\hat\\beta_{2t}` (``dtype``) at ``step``
        (a float64 tensor)."""
        rho = adafactor_rho(step, learning_rate, relative_step=self.relative_step, warmup_init=self.warmup_init)
        beta2t = adafactor_beta2t(step, self.decay_rate)
        return rho, ops.cast(beta2t, dtype), ops.cast(1.0 - beta2t, dtype)

    def _update_lists(self, grads: list[Any], variables: list[Any], learning_rate: Any) -> None:
        """``update_step`` for float32 variables on the torch backend (``hf_optim_tf._multi_tensor``): the same
        formulas in plain torch calls, the same bits, without Keras' dispatch of each op.

        The scalars of a step count are made once, the step sizes of all variables in one vector (elementwise, so
        each is the value ``update_step`` would make), the counters advanced in one multi-tensor op. Variables of at
        most ``PIECE`` elements then go through the formula together, in batches of similar sizes: the matrices
        with multi-tensor ops (:meth:`_update_together`), the vectors and 0-d variables concatenated
        (:meth:`_update_flat`); larger ones one after the other on pieces (:meth:`_update_in_pieces`)."""
        import torch  # (this is the torch backend: torch.stack, not keras.ops.stack and its checks of each tensor)

        indices = [self._get_variable_index(variable) for variable in variables]
        params = tensors(variables)
        counts = increment(tensors([self._step[index] for index in indices]))
        scalars = {c: self._step_scalars(ops.cast(c, "float64"), learning_rate, "float32") for c in set(counts)}
        small = [k for k, param in enumerate(params) if param.numel() <= _multi_tensor.PIECE]
        large = [k for k, param in enumerate(params) if param.numel() > _multi_tensor.PIECE]
        o = self._piece_ops = self._piece_ops or PieceOps()
        if large:
            o.reserve(max(params[k].numel() for k in large), params[large[0]])
        param_rms = rms([params[k] for k in small], ForeachOps) if small else None  # one per variable, a 1-D tensor
        if large:  # (the large variables' RMS in their places)
            each: list[Any] = [None] * len(params)
            for k, value in zip(small, param_rms if small else ()):
                each[k] = value
            for k in large:
                each[k] = rms(params[k], o)
            param_rms = torch.stack(each)
        assign_all(tensors([self._rms[index] for index in indices]), list(param_rms))
        # rho of each variable (elementwise with the RMS: one 0-d tensor where every variable has the same count)
        rho = scalars[counts[0]][0] if len(scalars) == 1 else torch.stack([scalars[c][0] for c in counts])
        alphas = adafactor_step_size(rho, param_rms, scale_parameter=self.scale_parameter, epsilon_2=self.epsilon_2)
        alphas = alphas.expand(len(counts))  # (rho alone, without scale_parameter)
        decays = None
        if self.decoupled_weight_decay != 0.0:
            decays = decay_coefficient(alphas, self.decoupled_weight_decay, "float32")
        alphas = ops.cast(alphas, "float32")
        states = [
            tensors([state[index] for index in indices]) for state in (self._exp_avg, self._row, self._col, self._full)
        ]
        epsilon_1 = ops.convert_to_tensor(self.epsilon_1, dtype="float32")
        lists = [params, grads, *states]
        # per variable, as 0-d float32 tensors (no value read back to the host): keep, mix, alpha, decay
        per_variable = [
            *zip(*(scalars[count][1:] for count in counts)),
            list(alphas),
            [None] * len(counts) if decays is None else list(decays),
        ]
        for k in large:
            self._update_in_pieces(*(values[k] for values in lists), *(values[k] for values in per_variable), epsilon_1)
        for factored, update in ((True, self._update_together), (False, self._update_flat)):
            # by size: a batch's divisions by the square roots of the sizes take few calls (divide_scalars)
            # (an empty unfactored variable has nothing to update beyond its count and RMS, written above)
            kind = [k for k in small if (states[3][k] is None) == factored and (factored or params[k].numel())]
            together = sorted(kind, key=lambda k: params[k].numel())
            if together:  # (every tensor here is whole in its batch: the lists need not share the params' shapes)
                in_batches(
                    functools.partial(update, epsilon_1=epsilon_1),
                    [[values[k] for k in together] for values in lists],
                    [tuple(values[k] for k in together) for values in per_variable],
                )

    def _update_together(
        self, param: list[Any], grad: list[Any], exp_avg: list[Any], row: list[Any], col: list[Any], full: list[Any],
        keep: tuple[Any, ...], mix: tuple[Any, ...], alpha: tuple[Any, ...], decay: tuple[Any, ...], *, epsilon_1: Any,
    ) -> None:  # fmt: skip
        """``update_step``'s formula on a batch of variables of one kind (factored or not) with ``ForeachOps``: one
        multi-tensor op for each elementwise op, one torch call per tensor for each sum. The per-variable scalars are
        0-d tensors (lists of them: multi-tensor products tensor by tensor); a state the batch's variables do not
        have is a list of None, and so is ``decay`` without weight decay."""
        old = [param, *(None if state[0] is None else state for state in (row, col, full, exp_avg))]
        update, *statistics = adafactor_direction(
            ForeachOps,
            grad,
            *old[1:4],
            keep=list(keep),
            mix=list(mix),
            epsilon_1=epsilon_1,
            clip_threshold=self.clip_threshold,
        )
        new_param, exp_avg = adafactor_parameter(
            ForeachOps,
            param,
            update,
            old[4],
            alpha=list(alpha),
            beta_1=self.beta_1,
            first_moment=self.first_moment,
            decay=None if decay[0] is None else list(decay),
        )
        new = (new_param, *statistics, exp_avg)
        assign_all([t for ts in old if ts is not None for t in ts], [t for ts in new if ts is not None for t in ts])

    def _update_flat(
        self, param: list[Any], grad: list[Any], exp_avg: list[Any], row: list[Any], col: list[Any], full: list[Any],
        keep: tuple[Any, ...], mix: tuple[Any, ...], alpha: tuple[Any, ...], decay: tuple[Any, ...], *, epsilon_1: Any,
    ) -> None:  # fmt: skip
        """``update_step``'s formula on a batch of unfactored variables (``row`` and ``col`` lists of None)
        concatenated (``FlatOps``): one torch call for each elementwise op of the batch, the sums per variable; the
        results copied back into the variables and the state."""
        import torch

        o = FlatOps(param)
        flat = [None if ts[0] is None else o.flat(ts) for ts in (param, grad, full, exp_avg)]
        update, _, _, new_full = adafactor_direction(
            o,
            flat[1],
            None,
            None,
            flat[2],
            keep=o.scalars(keep),
            mix=o.scalars(mix),
            epsilon_1=epsilon_1,
            clip_threshold=self.clip_threshold,
        )
        new_param, new_exp_avg = adafactor_parameter(
            o,
            flat[0],
            update,
            flat[3],
            alpha=o.scalars(alpha),
            beta_1=self.beta_1,
            first_moment=self.first_moment,
            decay=None if decay[0] is None else o.scalars(decay),
        )
        targets = [param, full] if new_exp_avg is None else [param, full, exp_avg]
        values = [new_param, new_full] if new_exp_avg is None else [new_param, new_full, new_exp_avg]
        torch._foreach_copy_(
            [t for ts in targets for t in ts], [v for ts, value in zip(targets, values) for v in o.pieces(value, ts)]
        )

    def _update_in_pieces(
        self, param: Any, grad: Any, exp_avg: Any, row: Any, col: Any, full: Any,
        keep: Any, mix: Any, alpha: Any, decay: Any, epsilon_1: Any,
    ) -> None:  # fmt: skip
        """``update_step``'s formula on one variable, each elementwise stage on cache-sized pieces
        (:meth:`PieceOps.run`) between the sums, which read whole tensors kept in two scratch buffers: ``g**2 +
        eps1`` (factored; its row and column means), the update before clipping (its RMS), then the clipped update,
        the first moment and the parameter, written into the variables piece by piece."""
        o = self._piece_ops
        if full is None:
            (squared,) = o.run(lambda g: (adafactor_squared(o, g, epsilon_1),), [grad], [0])
            new_row, new_col, _ = adafactor_second_moment(o, squared, row, col, None, keep=keep, mix=mix)
            factors = adafactor_factors(o, new_row, new_col)
            (update,) = o.run(lambda g, r, c: (adafactor_unclipped(o, g, (r, c), None),), [grad, *factors], [1])
            row.copy_(new_row)
            col.copy_(new_col)
        else:

            def statistics(g: Any, v: Any) -> tuple[Any, Any]:
                squared = adafactor_squared(o, g, epsilon_1)
                _, _, v = adafactor_second_moment(o, squared, None, None, v, keep=keep, mix=mix)
                return v, adafactor_unclipped(o, g, None, v)

            _, update = o.run(statistics, [grad, full], [full, 1])
        divisor = clip_divisor(rms(update, o), self.clip_threshold, o)

        def apply(p: Any, u: Any, m: Any) -> tuple[Any, ...]:
            new_param, new_exp_avg = adafactor_parameter(
                o,
                p,
                o.divide(u, divisor),
                m,
                alpha=alpha,
                beta_1=self.beta_1,
                first_moment=self.first_moment,
                decay=decay,
            )
            return (new_param,) if m is None else (new_param, new_exp_avg)

        o.run(apply, [param, update, exp_avg], [param] if exp_avg is None else [param, exp_avg])

    def variable_state(self, variable: Any) -> dict[str, Any]:
        """The state of one model variable under the spec's names (NumPy values), like torch's
        ``optimizer.state[param]``."""
        index = self._get_variable_index(variable)
        slots = {
            "exp_avg": self._exp_avg[index],
            "exp_avg_sq_row": self._row[index],
            "exp_avg_sq_col": self._col[index],
            "exp_avg_sq": self._full[index],
        }
        state: dict[str, Any] = {"step": int(numpy_value(self._step[index]))}
        state.update({k: numpy_value(v) for k, v in slots.items() if v is not None})
        state["RMS"] = float(numpy_value(self._rms[index]))
        return state
