"""Loading configuration: YAML -> ``${ENV}`` expansion -> validation, with every problem named by its path.

``load_config`` either returns a valid ``Config`` or raises ``ConfigError`` listing *all* problems found, each as
``path.in.file[index].key: what is wrong`` so a user can fix a file in one pass.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .model import ADAPTER_SERVICES, Config

__all__ = [
    "ConfigError",
    "default_config_text",
    "expand_env",
    "load_config",
    "parse_config",
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
            msg = "unknown key"
        elif err["type"] == "literal_error":
            msg = f"must be one of {err.get('ctx', {}).get('expected', '')}"
            if loc and loc[-1] == "[key]":
                pass
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        # pydantic names a bad dict key "services.foo.[key]"; say it plainly.
        if loc and loc[-1] == "[key]":
            loc = loc[:-1]
            msg = f"unknown name ({msg})"
        problems.append(f"{_loc_to_path(loc)}: {msg}")
    return problems


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
        served_anywhere |= served
        for model, override in _dicts(service.get("models")).items():
            if model not in served:
                problems.append(f"services.{service_name}.models.{model}: no instance serves this model")
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


def parse_config(data: Any, *, env: Mapping[str, str] | None = None, source: str = "<config>") -> Config:
    """Validate an already-parsed YAML/JSON document."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, ["<root>: must be a mapping"])
    problems: list[str] = []
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


def load_config(path: str | Path, *, env: Mapping[str, str] | None = None) -> Config:
    source = str(path)
    return parse_config(parse_yaml(read_config_text(path), source), env=env, source=source)


def default_config_text() -> str:
    return resources.files("modelrouter").joinpath("default_config.yaml").read_text(encoding="utf-8")


def load_default_config(*, env: Mapping[str, str] | None = None) -> Config:
    return parse_config(parse_yaml(default_config_text(), "<embedded default>"), env=env, source="<embedded default>")
