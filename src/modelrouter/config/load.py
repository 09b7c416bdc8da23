"""Loading configuration: YAML -> ``${ENV}`` expansion -> validation, with every problem named by its path.

``load_config`` either returns a valid ``Config`` or raises ``ConfigError`` listing *all* problems found, each as
``path.in.file[index].key: what is wrong`` so a user can fix a file in one pass. Messages hint at the fix where
they can: the closest known key for an unknown one (``base-url`` -> ``base_url``), seconds for ``"10s"``.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from .model import ADAPTER_SERVICES, Config, PositiveSeconds

__all__ = [
    "ConfigError",
    "default_config_text",
    "expand_env",
    "load_config",
    "parse_config",
    "parse_config_text",
    "parse_yaml",
    "read_config_text",
]


class ConfigError(Exception):
    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems))


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: Any, env: Mapping[str, str], problems: list[str], path: str = "") -> Any:
    """Replace ``${NAME}`` and ``${NAME:-default}`` in every string value. A missing variable with no default
    is a problem, not an empty string: an empty API key would fail much later and less clearly."""
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            problems.append(f"{path or '<root>'}: environment variable {name} is not set")
            return ""

        return _ENV.sub(sub, value)
    if isinstance(value, dict):
        return {k: expand_env(v, env, problems, _join(path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, env, problems, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _loc_to_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out = f"{out}[{part}]" if isinstance(part, int) else _join(out, part)
    return out or "<root>"


def _pydantic_problems(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key" + _did_you_mean(_suggestion(loc))
        elif err["type"] == "literal_error":
            msg = f"must be one of {err.get('ctx', {}).get('expected', '')}"
        elif err["type"] == "float_parsing" and (hint := _seconds_hint(loc, err["input"])):
            msg = hint
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        # pydantic names a bad dict key "services.foo.[key]"; say it plainly.
        if loc and loc[-1] == "[key]":
            guess = _suggestion(loc)
            loc = loc[:-1]
            msg = f"unknown name{_did_you_mean(guess)}" if guess else f"unknown name ({msg})"
        problems.append(f"{_loc_to_path(loc)}: {msg}")
    return problems


# --- hints: what the user probably meant ----------------------------------------------------------------------


def _did_you_mean(known: str | None) -> str:
    return "" if known is None else f" (did you mean `{known}`?)"


def _unwrap(annotation: Any) -> Any:
    """``X`` from ``Annotated[X, ...]`` and ``X | None``."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _annotation_at(loc: tuple[int | str, ...]) -> Any:
    """The type the config model declares at ``loc`` (annotations kept, e.g. ``PositiveSeconds``); None when
    ``loc`` leads nowhere known."""
    annotation: Any = Config
    for part in loc:
        current = _unwrap(annotation)
        origin = typing.get_origin(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            if part not in current.model_fields:
                return None
            annotation = typing.get_type_hints(current, include_extras=True)[str(part)]
        elif origin is dict:
            annotation = typing.get_args(current)[1]
        elif origin in (list, tuple) and isinstance(part, int):
            annotation = typing.get_args(current)[0]
        else:
            return None
    return annotation


def _suggestion(loc: tuple[int | str, ...]) -> str | None:
    """The known name closest to the last part of ``loc``: a field of the model around it, or a key the dict
    around it allows (service names). Kebab-case is JAiRouter's spelling of our snake_case."""
    *parent, word = loc
    if word == "[key]":  # a bad dict key: pydantic puts the key itself just before this marker
        *parent, word = parent
        key_and_value = typing.get_args(_unwrap(_annotation_at(tuple(parent))))
        known = [str(name) for name in typing.get_args(key_and_value[0])] if key_and_value else []
    else:
        model = _unwrap(_annotation_at(tuple(parent)))
        known = list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []
    if not isinstance(word, str):
        return None
    spelled = word.lower().replace("-", "_")
    if spelled in known:
        return spelled
    close = difflib.get_close_matches(spelled, known, n=1)
    return close[0] if close else None


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|sec|secs|seconds?|m|min|mins|minutes?|h|hours?)\s*$", re.I)
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}


def _seconds_hint(loc: tuple[int | str, ...], value: Any) -> str | None:
    """For a duration given as text ("10s", "2m"): ask for the number of seconds, worked out when possible."""
    declared = _annotation_at(loc)  # `PositiveSeconds`, or `PositiveSeconds | None`, for every duration
    if PositiveSeconds not in (declared, *typing.get_args(declared)):
        return None
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        example = "10"
    else:
        unit = match[2].lower()
        factor = _UNIT_SECONDS["ms" if unit == "ms" else unit[0]]
        example = f"{float(match[1]) * factor:g}"
    return f'give a number of seconds, e.g. {example} (not "{value}")'


def _dicts(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _semantic_problems(data: dict[str, Any]) -> list[str]:
    """Cross-field checks pydantic cannot express per field. They read the raw document defensively, so that
    they run - and their problems are listed - even when some fields are invalid."""
    problems: list[str] = []
    served_anywhere: set[str] = set()
    for service_name, service in _dicts(data.get("services")).items():
        service = _dicts(service)
        raw_instances = service.get("instances")
        instances = [_dicts(i) for i in raw_instances] if isinstance(raw_instances, list) else []
        served: set[str] = set()
        for inst in instances:
            if isinstance(inst.get("name"), str):
                served.add(inst["name"])
            if isinstance(inst.get("models"), list):
                served |= {m for m in inst["models"] if isinstance(m, str)}
        placeholders = {m for m, o in _dicts(service.get("models")).items() if _dicts(o).get("unavailable")}
        served_anywhere |= served | placeholders
        for model, override in _dicts(service.get("models")).items():
            if model not in served and model not in placeholders:
                problems.append(
                    f"services.{service_name}.models.{model}: no instance serves this model (a placeholder "
                    "needs `unavailable`)"
                )
            fallbacks = _dicts(override).get("fallbacks")
            for i, fallback in enumerate(fallbacks if isinstance(fallbacks, list) else []):
                where = f"services.{service_name}.models.{model}.fallbacks[{i}]"
                if fallback == model:
                    problems.append(f"{where}: a model cannot fall back to itself")
                elif fallback not in served:
                    problems.append(f"{where}: no instance of service {service_name} serves '{fallback}'")
        for i, inst in enumerate(instances):
            serves = ADAPTER_SERVICES.get(inst.get("adapter"))  # type: ignore[arg-type]
            if serves is not None and service_name not in serves:
                problems.append(
                    f"services.{service_name}.instances[{i}].adapter: {inst['adapter']} serves only "
                    f"{' and '.join(serves)}"
                )
    for alias, target in _dicts(data.get("aliases")).items():
        if target not in served_anywhere:
            problems.append(f"aliases.{alias}: unknown model '{target}'")
        if alias in served_anywhere:
            problems.append(f"aliases.{alias}: alias hides a model of the same name")
    return problems


def parse_config(
    data: Any, *, env: Mapping[str, str] | None = None, source: str = "<config>", require_services: bool = False
) -> Config:
    """Validate an already-parsed YAML/JSON document. With ``require_services`` (what a config *file* must
    have) a document without services is a problem; a library may well build a gateway with none."""
    problems: list[str] = []
    if data is None:
        data = {}
        if require_services:
            problems.append("<root>: the file is empty: a config needs at least one service under services:")
    elif not isinstance(data, dict):
        raise ConfigError(source, ["<root>: must be a mapping"])
    elif require_services and not data.get("services"):
        problems.append("services: no services: the gateway would route nothing; add at least one")
    data = expand_env(data, os.environ if env is None else env, problems)
    config: Config | None = None
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        # A value whose environment variable is missing would also be reported as invalid: say it once.
        env_paths = {p.split(": ", 1)[0] for p in problems}
        problems += [p for p in _pydantic_problems(exc) if p.split(": ", 1)[0] not in env_paths]
    problems += _semantic_problems(data)
    if problems or config is None:
        raise ConfigError(source, problems)
    return config


def parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "<root>"
        raise ConfigError(source, [f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})"]) from None


def read_config_text(path: str | Path) -> str:
    """A config file's text; ``ConfigError`` if it cannot be read."""
    source = str(path)
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, [f"<file>: cannot read ({exc.strerror or exc})"]) from None
    except UnicodeDecodeError:
        raise ConfigError(source, ["<file>: not UTF-8 text"]) from None


def parse_config_text(
    text: str, source: str, *, env: Mapping[str, str] | None = None, require_services: bool = True
) -> Config:
    """A config file's text (YAML, ``${ENV}`` expanded), validated as a file: it must have services, unless it
    only locates the store (``require_services=False``)."""
    return parse_config(parse_yaml(text, source), env=env, source=source, require_services=require_services)


def load_config(path: str | Path, *, env: Mapping[str, str] | None = None, require_services: bool = True) -> Config:
    """A config file, validated as ``parse_config_text`` does (``ConfigError`` also if it cannot be read)."""
    return parse_config_text(read_config_text(path), str(path), env=env, require_services=require_services)


def default_config_text() -> str:
    return resources.files("modelrouter").joinpath("default_config.yaml").read_text(encoding="utf-8")


def load_default_config(*, env: Mapping[str, str] | None = None) -> Config:
    return parse_config(parse_yaml(default_config_text(), "<embedded default>"), env=env, source="<embedded default>")
