"""A small registered-on-demand experiment for runner and store tests (cheap cells, optional delays and
failures), importable from a subprocess."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transferlens.experiments.base import Experiment
from transferlens.runs import Cell, CellOutput, Context


@dataclass(frozen=True)
class ToyConfig:
    n: int = 4
    fail: tuple[int, ...] = ()
    scale: float = 1.0
    # TOY_DELAY (seconds per item) and TOY_INTERRUPT_AT (the item that sends SIGINT to this process) come from
    # the environment, so that they change no cell's key: a resumed run must see the same cells.


class Toy(Experiment):
    """A "base" cell with trained "weights", then one cell per item drawing from its own derived seed."""

    name = "toy"
    config_cls = ToyConfig

    def __init__(self) -> None:
        self.calls: list[str] = []

    def grid(self, config: ToyConfig) -> list[Cell]:
        base = Cell.make("toy.base", {"scale": config.scale}, label="base")
        items = [
            Cell.make("toy.item", {"i": i, "scale": config.scale, "fail": i in config.fail}, deps=(base.key,), label=f"item {i}")
            for i in range(config.n)
        ]
        return [base, *items]

    def run_cell(self, cell: Cell, ctx: Context) -> CellOutput:
        import torch

        self.calls.append(cell.label)
        spec = cell.spec
        if cell.kind == "toy.base":
            w = torch.arange(4, dtype=torch.float32) * spec["scale"]
            return CellOutput(results=[("offset", "", 10.0 * spec["scale"])], weights={"weights": {"w": w}})
        if spec["fail"]:
            raise RuntimeError(f"item {spec['i']} cannot be computed")
        config_delay = float(os.environ.get("TOY_DELAY", "0"))
        if config_delay:
            time.sleep(config_delay)
        if spec["i"] == int(os.environ.get("TOY_INTERRUPT_AT", "-1")):
            os.kill(os.getpid(), signal.SIGINT)
        w = ctx.weights(cell.deps[0])["w"]
        offset = ctx.results(cell.deps[0])["offset"]
        draw = float(np.random.default_rng(cell.seed("draw")).random())
        return CellOutput(
            results=[("value", "", offset + draw + float(w.sum())), ("draw", "", draw)],
            payload={"i": spec["i"]},
            arrays={"samples": np.arange(3.0) + draw},
        )

    def analyse(self, config: ToyConfig, cells: list[Cell], ctx: Context, seconds: float = 0.0) -> Any:
        return {c.label: ctx.results(c.key)["value"] for c in cells if c.kind == "toy.item"}

    def write(self, result: Any, out_dir: str | Path) -> dict[str, Path]:
        return {}


def main(store_path: str, n: int) -> None:
    """Run the toy grid against a store (used by the kill -9 test)."""
    from transferlens.runs.runner import execute
    from transferlens.runs.store import Store

    with Store(store_path) as store:
        execute(Toy(), ToyConfig(n=n), store=store)


if __name__ == "__main__":
    import sys

    main(sys.argv[1], int(sys.argv[2]))
