"""Plugin discovery and loading through pluggy and the ``waltz_gate`` entry-point group.

pluggy's PluginManager registers the plugins and checks their hook implementations against the spec
(gate/hookspecs.py); the gate then calls each plugin's own implementation (``hook.get_hookimpls()``), not
``pm.hook.<name>``, because it needs one call per plugin: ``pm.hook.gate_check`` runs every plugin in one
thread, one after another, and the first exception aborts the rest, while the gate gives each plugin its own
deadline, worker pool (Stage 2), failure status and metrics, and its own settings in ``gate_setup``.
``pm.subset_hook_caller`` would make that one call per plugin, but it drops a ``None`` result (a plugin
bug that must read as an error, never as "nothing found") and costs about 2 us a call against 0.1 us.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from gate import hookspecs
from gate.config import ConfigError, GateSettings, describe
from gate.types import CheckRequest, Detection

DEFAULT_TIMEOUT_MS = 50.0  # for a plugin whose class declares no timeout_ms


@dataclass(frozen=True)
class LoadedPlugin:
    name: str
    stage: int
    description: str
    timeout_s: float
    check: Callable[[CheckRequest], Sequence[Detection]]
    ready: Callable[[], bool]
    check_batch: Callable[[Sequence[CheckRequest]], Sequence[Sequence[Detection]]] | None = None


def installed() -> dict[str, EntryPoint]:
    """Every plugin installed in this environment, by entry-point name."""
    return {ep.name: ep for ep in entry_points(group=hookspecs.PROJECT)}


def _impl(pm: pluggy.PluginManager, hook: str, name: str) -> Callable[..., Any] | None:
    for impl in getattr(pm.hook, hook).get_hookimpls():
        if impl.plugin_name == name:
            return impl.function
    return None


def _instantiate(name: str, ep: EntryPoint) -> Any:
    try:
        cls = ep.load()
    except Exception as exc:  # a third-party import error must not read as a traceback
        raise ConfigError(f"plugin {name!r} ({ep.value}) failed to import: {type(exc).__name__}: {exc}.") from None
    if not isinstance(cls, type):
        raise ConfigError(f"plugin {name!r}: entry point {ep.value} must name a class.")
    stage = getattr(cls, "stage", None)
    if stage not in (1, 2):
        raise ConfigError(f"plugin {name!r}: class attribute 'stage' must be 1 or 2, not {stage!r}.")
    timeout_ms = getattr(cls, "timeout_ms", DEFAULT_TIMEOUT_MS)
    if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int | float) or timeout_ms <= 0:
        raise ConfigError(f"plugin {name!r}: class attribute 'timeout_ms' must be a positive number, not {timeout_ms!r}.")
    if getattr(cls, "name", name) != name:
        raise ConfigError(f"plugin {name!r}: class attribute 'name' is {cls.name!r}; it must equal the entry-point name.")
    return cls()


def _settings_model(name: str, obj: Any) -> type[BaseModel]:
    """The plugin's settings as a pydantic model: its ``Settings`` class, or one made from plain ``defaults``
    (any type, as before typed settings: such a plugin checks its own values)."""
    model = getattr(obj, "Settings", None)
    if model is None:
        fields = {key: (Any, value) for key, value in dict(getattr(obj, "defaults", {})).items()}
        return create_model(f"{name}_settings", __config__=ConfigDict(protected_namespaces=()), **fields)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise ConfigError(f"plugin {name!r}: class attribute 'Settings' must be a pydantic model class, not {model!r}.")
    return model


def load_plugins(settings: GateSettings) -> list[LoadedPlugin]:
    """Load, validate and set up the plugins named in ``settings.plugins``, in that order.

    Raises ConfigError for an unknown plugin, a plugin that fails to import or set up, settings for a
    plugin that is not enabled, or a hook implementation that matches no hook in the spec.
    """
    available = installed()
    for name in settings.plugins:
        if name not in available:
            known = ", ".join(sorted(available)) or "none"
            raise ConfigError(f"config field plugins names {name!r}, which is not installed (installed: {known}).")
    for name in settings.plugin_settings:
        if name not in settings.plugins:
            raise ConfigError(f"config field plugin_settings.{name} configures a plugin that is not enabled in plugins.")
    if len(set(settings.plugins)) != len(settings.plugins):
        raise ConfigError("config field plugins lists a plugin more than once.")

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    objects = {}
    for name in settings.plugins:
        objects[name] = _instantiate(name, available[name])
        pm.register(objects[name], name=name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise ConfigError(f"plugin {pm.get_name(exc.plugin)!r} implements a hook the gate does not define: {exc}.") from None

    loaded = []
    for name, obj in objects.items():
        check, check_batch = _impl(pm, "gate_check", name), _impl(pm, "gate_check_batch", name)
        if check is None and check_batch is None:
            raise ConfigError(f"plugin {name!r} implements neither gate_check nor gate_check_batch.")
        model, own = _settings_model(name, obj), settings.plugin(name)
        unknown = sorted(set(own.settings) - set(model.model_fields))
        if unknown:
            raise ConfigError(
                f"config field plugin_settings.{name}.settings has unknown key {unknown[0]!r} "
                f"(known: {', '.join(sorted(model.model_fields)) or 'none'})."
            )
        try:
            values = dict(model.model_validate(own.settings))
        except ValidationError as exc:
            raise ConfigError(describe(exc, prefix=f"config field plugin_settings.{name}.settings.")) from None
        setup = _impl(pm, "gate_setup", name)
        if setup is not None:
            try:
                setup(settings=values)
            except Exception as exc:
                raise ConfigError(f"plugin {name!r} failed to start: {exc}") from None
        ready = _impl(pm, "gate_ready", name)
        loaded.append(
            LoadedPlugin(
                name=name,
                stage=obj.stage,
                description=getattr(obj, "description", ""),
                timeout_s=(own.timeout_ms or getattr(obj, "timeout_ms", DEFAULT_TIMEOUT_MS)) / 1000.0,
                check=(
                    (lambda request, _f=check: _f(request=request))
                    if check is not None
                    else (lambda request, _b=check_batch: _b(requests=[request])[0])
                ),
                check_batch=(lambda requests, _b=check_batch: _b(requests=requests)) if check_batch else None,
                ready=ready if ready is not None else (lambda: True),
            )
        )
    return loaded
