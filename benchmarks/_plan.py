"""What a `nox -s bench` run measures, by its arguments: the frameworks, the rounds, the eager Keras peers, the peers
left out of the large layouts, and the sentence of the report that says so."""

from __future__ import annotations

import argparse

from _timing import BUDGET_S, MIN_ROUNDS

__all__ = ["keras_eager_peers", "left_out", "plan_text", "planned_rounds", "selected"]


def selected(args: argparse.Namespace, framework: str) -> bool:
    return args.only in (None, framework)


def planned_rounds(args: argparse.Namespace, framework: str, size: str) -> tuple[int, int]:
    """(warm-up, timed) rounds of one configuration: 20 timed rounds where a round is cheap or with --full."""
    if size == "small":  # milliseconds per step: many rounds are cheap, and they narrow the medians' intervals
        return (3, 20) if args.quick else (10, 150)
    if args.quick:
        return 1, 5
    if args.full or (framework == "torch" and size == "10M"):
        return 3, 20
    return 2, 12


def keras_eager_peers(args: argparse.Namespace, size: str) -> bool:
    """Eager Keras peers: at 10M always, at 80M/100M only with --full (or when there is no XLA run)."""
    return args.quick or args.full or args.no_jit or size == "10M"


def left_out(args: argparse.Namespace, framework: str, size: str, layout: str) -> frozenset[str]:
    """The peers the default run leaves out of a layout (``--full`` and ``--quick`` none): at 80M/100M torch's two
    slow AdamW peers, at 100M in ~200 tensors the Keras Adafactor peers (see _torch_bench.SLOW_ADAMW and
    _keras_bench.ADAFACTOR; the 10M tables have them all)."""
    import _keras_bench  # (imported by main already, after the thread settings)
    import _torch_bench

    if args.full or args.quick or size in ("10M", "small"):
        return frozenset()
    if framework == "torch":
        return _torch_bench.SLOW_ADAMW
    return _keras_bench.ADAFACTOR if layout == "transformer" else frozenset()


def plan_text(args: argparse.Namespace) -> str:
    slow = (
        f"a peer whose timed steps add up to {BUDGET_S:.0f} s sits out the rounds left after {MIN_ROUNDS} of them (the "
        "slow peers: transformers-style loops, torch.optim.Adafactor at 80M/100M, Keras' own eager steps at ~200 "
        "tensors)"
    )
    if args.quick:
        return "1 warm-up then 5 timed rounds"
    if args.full:
        return f"3 warm-up then 20 timed rounds (--full); eager Keras peers at every size; {slow}"
    eager = "eager Keras peers at 10M only" if not args.no_jit else "eager Keras peers at every size"
    return (
        "3 warm-up then 20 timed rounds for torch at 10M, 10 then 150 for the 200 small tensors, 2 then 12 for torch "
        f"at 80M/100M and for Keras; {slow}; {eager}; torch.optim.AdamW(foreach=True) and the transformers-style "
        "AdamW loop at 10M only, and the Keras Adafactor peers not at 100M in ~200 tensors (their XLA compilations "
        "take 20 s each there; the 10M tables have them all) (`--full`: 20 rounds everywhere, every peer at every "
        "size, and eager Keras at 80M/100M too)"
    )
