"""Training progress for a log that is not a terminal: one status line per tenth of the steps.

In a pipeline step's log (a pipe) the Trainer's redrawn progress bar turns into hundreds of lines;
:func:`progress_lines` replaces it with a line about every 10% of the steps (with an ETA) and one per
epoch's validation scores.
"""

from __future__ import annotations

import time
from typing import Any


def progress_lines(every_fraction: float = 0.1) -> Any:
    """A Trainer callback printing a status line about every 10% of the steps (with an ETA) and each
    epoch's validation scores.

    For output that is not a terminal (a pipeline step's log), where a redrawn progress bar turns into
    hundreds of lines.
    """
    from transformers import TrainerCallback

    class ProgressLines(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self._started = 0.0
            self._next = 0
            self._done = False

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._done = True

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._started = time.perf_counter()
            self._next = max(1, int(state.max_steps * every_fraction))
            print(f"training: {state.max_steps} steps, {args.num_train_epochs:g} epochs", flush=True)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            step, total = state.global_step, state.max_steps
            if step < self._next and step != total:
                return
            self._next = step + max(1, int(total * every_fraction))
            elapsed = time.perf_counter() - self._started
            eta = elapsed / step * (total - step)
            print(
                f"  step {step}/{total} ({step / total:.0%}), epoch {state.epoch:.2f},"
                f" {elapsed:.0f} s elapsed, ETA {eta:.0f} s",
                flush=True,
            )

        def on_evaluate(
            self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None, **kwargs: Any
        ) -> None:
            if metrics and "eval_macro_f1" in metrics:
                what = "best epoch" if self._done else f"epoch {state.epoch:.0f}"
                print(
                    f"  {what}: validation macro-F1 {metrics['eval_macro_f1']:.4f},"
                    f" loss {metrics.get('eval_loss', float('nan')):.4f}",
                    flush=True,
                )

    return ProgressLines()
