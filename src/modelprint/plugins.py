"""One plug-in mechanism for every kind: strategies, verifiers, stresses/attacks, merge methods, tasks.

Each kind owns one :class:`Registry` (made in its blueprint module, which states the contract a plug-in
fills in). A plug-in registers itself with ``@REGISTRY.register(name, source=...)``; ``source`` names the
paper or origin it reproduces (the one provenance field). Plug-ins are loaded in one place,
:func:`load_plugins`: the built-in modules a registry names, then every module published under the
``modelprint.plugins`` entry-point group, so a third-party scheme or attack is a pip package::

    [project.entry-points."modelprint.plugins"]
    my_scheme = "my_package.my_scheme"      # importing it registers its plug-ins

Loading is by module name (``importlib``), never by an import statement here, so this ground-floor
module depends on no stage.
"""
from __future__ import annotations

import importlib
import logging
from importlib import metadata
from typing import Any, Callable, Generic, Iterator, Mapping, Optional, Sequence, TypeVar

from modelprint.errors import ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")
ENTRY_POINT_GROUP = "modelprint.plugins"

_loaded_entry_points = False


class UnknownPluginError(ConfigError):
    """A plug-in name that no registry of its kind knows (the message lists the known ones)."""


def load_entry_points() -> None:
    """Import every module published under the ``modelprint.plugins`` entry-point group (once per process).

    A plug-in that fails to import is logged and skipped, so one broken third-party package does not
    stop every command.
    """
    global _loaded_entry_points
    if _loaded_entry_points:
        return
    _loaded_entry_points = True
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry.load()
            if callable(loaded) and not isinstance(loaded, type):
                loaded()  # "pkg.mod:setup" style: a function that registers
        except Exception as exc:  # noqa: BLE001  (a third party's error must not become ours)
            log.warning("plug-in '%s' (%s) failed to load: %s: %s", entry.name, entry.value, type(exc).__name__, exc)


def load_plugins(modules: Sequence[str] = ()) -> None:
    """The one place plug-ins are loaded: import the built-in ``modules``, then the entry-point group."""
    for name in modules:
        importlib.import_module(name)
    load_entry_points()


class Registry(Mapping[str, T], Generic[T]):
    """The plug-ins of one kind, by name; a read-only mapping that loads its plug-ins on first use.

    ``builtins`` are the module names whose import registers the shipped plug-ins. ``build`` turns
    what a decorator receives into what is stored (e.g. a function into a spec reading its signature);
    by default the object itself is stored.
    """

    def __init__(self, kind: str, *, builtins: Sequence[str] = (),
                 build: Optional[Callable[..., T]] = None) -> None:
        self.kind = kind
        self.builtins = tuple(builtins)
        self._build = build
        self._entries: dict[str, T] = {}
        self._sources: dict[str, str] = {}
        self._loaded = False

    def register(self, name: str, *, source: str, **extra: Any) -> Callable[[Any], Any]:
        """Decorator: register the decorated object under ``name``; ``source`` is its paper or origin."""

        def wrap(obj: Any) -> Any:
            self.add(name, self._build(name, obj, source=source, **extra) if self._build else obj, source=source)
            return obj

        return wrap

    def add(self, name: str, value: T, *, source: str) -> T:
        """Register ``value`` itself (the non-decorator form); a later registration replaces an earlier one."""
        if not source:
            raise TypeError(f"{self.kind} '{name}' needs a source (the paper or origin it reproduces)")
        self._entries[name] = value
        self._sources[name] = source
        return value

    def remove(self, name: str) -> None:
        """Take plug-in ``name`` out again (a test's temporary plug-in, a plug-in an application disables)."""
        self.get(name)
        del self._entries[name], self._sources[name]

    def load(self) -> None:
        if not self._loaded:
            self._loaded = True
            load_plugins(self.builtins)

    def get(self, name: str) -> T:  # type: ignore[override]  (one clear error instead of a default)
        """The plug-in ``name``, or an :class:`UnknownPluginError` naming the kind and listing the known names."""
        self.load()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownPluginError(f"unknown {self.kind} '{name}' (known: {', '.join(self.names())})") from None

    def source(self, name: str) -> str:
        """Where plug-in ``name`` comes from (paper or origin)."""
        self.get(name)
        return self._sources[name]

    def names(self) -> list[str]:
        """The registered names, sorted."""
        self.load()
        return sorted(self._entries)

    def __getitem__(self, name: str) -> T:
        self.load()
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        self.load()
        return iter(list(self._entries))

    def __len__(self) -> int:
        self.load()
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        self.load()
        return name in self._entries
