"""Which task a name means: survey_ml's own tasks and those other packages register.

A separate package adds a task without touching survey_ml by declaring an entry point in
the ``survey_ml.tasks`` group, e.g. in its ``pyproject.toml``::

    [project.entry-points."survey_ml.tasks"]
    my_task = "my_package.my_module:MyTask"

or, in a running session, with :func:`register`. A name given twice is an error naming both
sources, never a silent override.
"""
from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points

from .base import SpecError, Task

__all__ = ["register", "get_task", "available_tasks", "builtin_tasks", "tasks_from_spec", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "survey_ml.tasks"
#: Modules of this package that hold the engine's contract, not a task.
_NOT_TASKS = frozenset({"base", "registry", "spectra_inputs"})
_REGISTERED: dict[str, type[Task]] = {}
_BUILTIN: dict[str, str] = {}


def builtin_tasks() -> dict[str, str]:
    """survey_ml's own tasks, ``name -> "module:Class"``: every Task subclass defined in a module of
    this package, found by walking it - so a new task is one new module and nothing else.

    Examples
    --------
    >>> builtin_tasks()["redshift"]
    'survey_ml.tasks.redshift:Redshift'
    """
    if not _BUILTIN:
        import pkgutil
        from pathlib import Path

        for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda m: m.name):
            if info.name in _NOT_TASKS or info.name.startswith("_"):
                continue
            module = import_module(f"{__package__}.{info.name}")
            for value in vars(module).values():
                if (isinstance(value, type) and issubclass(value, Task) and value.__module__ == module.__name__
                        and isinstance(getattr(value, "name", None), str)):
                    _BUILTIN[value.name] = f"{module.__name__}:{value.__qualname__}"
    return dict(_BUILTIN)


def register(task: type[Task]) -> type[Task]:
    """Register a :class:`~survey_ml.tasks.base.Task` subclass under its ``name`` (usable as a decorator).

    Examples
    --------
    >>> from survey_ml.tasks.base import Column
    >>> @register
    ... class Doubled(Task):
    ...     name, input_kind, columns = "doctest_doubled", "spectra", (Column("twice_z", "float64"),)
    ...     needs_weights = False
    ...     def prepare(self, block, rows): ...
    ...     def predict(self, model, batch): ...
    >>> get_task("doctest_doubled") is Doubled
    True
    """
    _check(task, f"{task.__module__}:{task.__qualname__}")
    known = _sources()
    if task.name in known and known[task.name] != task:
        raise ValueError(f"task name {task.name!r} is taken (by {_describe(known[task.name])})")
    _REGISTERED[task.name] = task
    return task


def _check(task: object, source: str) -> None:
    if not (isinstance(task, type) and issubclass(task, Task)):
        raise TypeError(f"{source} is not a survey_ml.tasks.Task subclass")
    for attribute in ("name", "input_kind", "columns"):
        if not hasattr(task, attribute):
            raise TypeError(f"{source}: a Task must declare {attribute!r}")
    names = [c.name for c in task.columns]
    if len(set(names)) != len(names):
        raise TypeError(f"{source}: column names repeat: {names}")


def _describe(source: object) -> str:
    return source if isinstance(source, str) else f"{source.__module__}:{source.__qualname__}"


def _sources() -> dict[str, object]:
    """name -> class or "module:Class" / entry point, builtins first."""
    found: dict[str, object] = builtin_tasks()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in found and found[ep.name] != ep.value:
            raise ValueError(f"task name {ep.name!r} of entry point {ep.value} is taken by {_describe(found[ep.name])}")
        found[ep.name] = ep.value
    for name, cls in _REGISTERED.items():
        found.setdefault(name, cls)
    return found


def get_task(name: str) -> type[Task]:
    """The task class called ``name`` (builtin, registered, or from an entry point).

    Examples
    --------
    >>> get_task("metallicity").columns[1].name
    'oh12'
    >>> get_task("metalicity")
    Traceback (most recent call last):
    ...
    survey_ml.config.SpecError: unknown task 'metalicity' (known: kinematics, metallicity, redshift, sfclass, stellar, strong_lines)
    """
    if name in _REGISTERED:
        return _REGISTERED[name]
    source = _sources().get(name)
    if source is None:
        known = ", ".join(sorted(n for n in _sources() if not n.startswith("doctest_")))
        raise SpecError(f"unknown task {name!r} (known: {known})")
    module, _, attribute = str(source).partition(":")
    task = getattr(import_module(module), attribute)
    _check(task, str(source))
    if task.name != name:
        raise TypeError(f"{source} is registered as {name!r} but its name is {task.name!r}")
    _REGISTERED[name] = task
    return task


def available_tasks() -> list[str]:
    """Names of every task survey_ml can run here (builtin and installed plug-ins)."""
    return sorted(n for n in _sources() if not n.startswith("doctest_"))


def tasks_from_spec(spec: dict, weights: dict[str, str] | None = None, names: list[str] | None = None) -> list[Task]:
    """The tasks a release spec's ``[tasks.*]`` tables name, in the spec's order, built from their tables.

    ``weights`` overrides a task's weights file; ``names`` picks (and orders) a subset, and
    may name a task the spec has no table for (it then runs with its defaults).

    Examples
    --------
    >>> from survey_ml.config import load_release_spec
    >>> [t.name for t in tasks_from_spec(load_release_spec("dr10"))]
    ['metallicity', 'sfclass', 'redshift']
    """
    tables = spec.get("tasks", {})
    path = spec.get("release", {}).get("spec_path", "<spec>")
    tasks = []
    for name in names or list(tables):
        tasks.append(get_task(name).from_spec(tables.get(name, {}), path, (weights or {}).get(name), spec=spec))
    return tasks
