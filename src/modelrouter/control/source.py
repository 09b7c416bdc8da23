"""Where the live config comes from, and its history: the two config modes.

*File mode* (the default): the YAML file is the only truth. Every successful load of it - at startup, on SIGHUP,
on a change to the file - is recorded as a version in the store, so history and diffs work, but the admin API
refuses config writes (409 ``config_read_only``): an edit there would be overwritten by the next file load. The
store notes the mode each gateway starts in, so that ``modelrouter config rollback|import`` refuse the same way
(``file_mode_refusal``): the newest version is always the one served.

*Store mode* (``serve --config-source store``): the YAML file only seeds version 1 of an empty store. From then on
the store holds the truth: admin-API edits and rollbacks create versions and are applied live, through the same
atomic swap as a reload; a restart serves the newest version, and the file is read again only on an explicit
import (``serve --import`` or ``modelrouter config import FILE``). Versions made by another process (the CLI,
another replica) are picked up within ``store.refresh_interval``.

Versions hold the YAML text as written, ``${ENV}`` references unexpanded: secrets that come from the environment
never reach the database. A secret written literally never does either (``secret_problems``, ``stored_text``): store
mode refuses it, since the store is where that config would live; file mode records the version with it masked,
since the file is the truth and stays as the user wrote it. Views for the admin API mask secrets written literally
(``masked``).

Why this module is long: the two config modes, versions and rollbacks, and the secret rules that decide what
may be stored are one protocol; the secret rules are used only by it and the admin views.
"""

from __future__ import annotations

import asyncio
import copy
import difflib
import json
import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol

import orjson
import yaml

from ..config.load import ConfigError, parse_config, parse_yaml
from ..config.model import Config
from ..errors import GatewayError, InvalidRequest, NotFound
from ..store.records import StaleVersionError

if TYPE_CHECKING:  # the store pulls in SQLAlchemy
    from ..store import ConfigVersion, Store

__all__ = [
    "MASK",
    "ConfigControl",
    "ConfigReadOnly",
    "InvalidConfig",
    "Mode",
    "VersionConflict",
    "diff_texts",
    "dump_document",
    "file_mode_refusal",
    "masked",
    "parse_text",
    "secret_problems",
    "stored_text",
    "unmask",
]

log = logging.getLogger("modelrouter.config")

Mode = Literal["file", "store"]
MASK = "********"


class ConfigReadOnly(GatewayError):
    status = 409
    type = "invalid_request_error"
    code = "config_read_only"


class VersionConflict(GatewayError):
    status = 409
    type = "invalid_request_error"
    code = "version_conflict"


class InvalidConfig(InvalidRequest):
    """A proposed config with problems; the message lists each by its path, ``param`` names the first, and
    ``problems`` has each as ``{"param": path, "message": …}`` so that a form can show every one at its field."""

    code = "invalid_config"

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        first = problems[0].split(": ", 1)[0] if problems else None
        super().__init__("The config has problems: " + "; ".join(problems), param=first)

    def body(self) -> bytes:
        detail = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        listed = []
        for problem in self.problems:
            path, _, message = problem.partition(": ")
            listed.append({"param": path, "message": message} if message else {"param": None, "message": path})
        return orjson.dumps({"error": {**detail, "problems": listed}})


def file_mode_refusal(source: str | None = None) -> str:
    """Why a config version cannot be saved in file mode: the admin API and the CLI give this one message.
    ``source`` is the file, when known."""
    where = f"the file {source}" if source else "its config file"
    return (
        f"file mode: the gateway serves {where}, so a version saved here would be marked newest but never served; "
        "edit the file (or write version N to it with `modelrouter config export N -o FILE`), or run the gateway "
        "with --config-source store to manage the config in the store"
    )


class Reloadable(Protocol):
    config: Config

    def refusals(self, config: Config) -> list[str]: ...

    def reload(self, config: Config) -> None: ...


def parse_text(text: str, source: str = "<config>") -> Config:
    """Validate a config text (YAML, ``${ENV}`` expanded); ``ConfigError`` lists every problem."""
    return parse_config(parse_yaml(text, source), source=source)


def document(text: str) -> dict[str, Any]:
    """The config as written, for editing: YAML parsed, ``${ENV}`` references kept."""
    data = yaml.safe_load(text)
    return data if isinstance(data, dict) else {}


def dump_document(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=False)


def diff_texts(old: str, new: str, old_name: str, new_name: str) -> str:
    """A unified diff, as ``diff -u`` prints it."""
    lines = difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True), fromfile=old_name, tofile=new_name
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


# --- secrets in views -------------------------------------------------------------------------------------------

_ENV_ONLY = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}$")
_URL_PASSWORD = re.compile(r"^([a-z0-9+.-]+://[^:/@]*:)([^@]*)(@.*)$", re.IGNORECASE)
_URLS = ("database_url", "url")  # secret places where only the password part of a URL is secret


def _secret_places(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
    """(path by position, as validation names it; container; key) of every value that may be a secret: upstream
    request headers, client keys declared by their secret, the database URL, the Redis URL."""
    found: list[tuple[str, dict[str, Any], str]] = []
    services = doc.get("services")
    for service_name, service in services.items() if isinstance(services, dict) else ():
        instances = service.get("instances") if isinstance(service, dict) else None
        for i, inst in enumerate(instances if isinstance(instances, list) else ()):
            headers = inst.get("headers") if isinstance(inst, dict) else None
            if isinstance(headers, dict):
                found += [(f"services.{service_name}.instances[{i}].headers.{name}", headers, name) for name in headers]
            if isinstance(inst, dict) and "api_key" in inst:
                found.append((f"services.{service_name}.instances[{i}].api_key", inst, "api_key"))
    auth = doc.get("auth")
    keys = auth.get("keys") if isinstance(auth, dict) else None
    for i, key in enumerate(keys if isinstance(keys, list) else ()):
        if isinstance(key, dict) and "key" in key:
            found.append((f"auth.keys[{i}].key", key, "key"))
    store = doc.get("store")
    if isinstance(store, dict) and "database_url" in store:
        found.append(("store.database_url", store, "database_url"))
    state = doc.get("state")
    if isinstance(state, dict) and "url" in state:
        found.append(("state.url", state, "url"))
    return found


def _secret_paths(doc: dict[str, Any]) -> list[tuple[Any, Any]]:
    """(container, key) of every value that may be a secret (``_secret_places``), for views."""
    return [(container, key) for _, container, key in _secret_places(doc)]


def _mask_value(key: Any, value: Any) -> Any:
    if not isinstance(value, str) or _ENV_ONLY.match(value):
        return value  # a reference to the environment shows no secret
    if key in _URLS:
        match = _URL_PASSWORD.match(value)
        return f"{match[1]}{MASK}{match[3]}" if match else value
    return MASK


def masked(doc: dict[str, Any]) -> dict[str, Any]:
    """A copy with literal secrets replaced by ``MASK`` (references like ``${KEY}`` are shown as they are)."""
    out = copy.deepcopy(doc)
    for container, key in _secret_paths(out):
        container[key] = _mask_value(key, container[key])
    return out


def unmask(new: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """``new`` (edited from a masked view) with each masked value restored from the same place in ``current``;
    a mask with nothing to restore is a problem, not a secret of eight asterisks."""
    out = copy.deepcopy(new)
    before = {_where(current, c, k): c[k] for c, k in _secret_paths(current)}
    problems = []
    for container, key in _secret_paths(out):
        value = container[key]
        if isinstance(value, str) and MASK in value:
            where = _where(out, container, key)
            old = before.get(where)
            if old is None or _mask_value(key, old) != value:
                problems.append(f"{where}: a masked secret can only be kept where it was; give the value itself")
            else:
                container[key] = old
    if problems:
        raise InvalidConfig(problems)
    return out


def _where(doc: dict[str, Any], container: Any, key: Any) -> str:
    """A stable name for a secret's place: instances and keys by their names, not their positions."""
    services = doc.get("services")
    for service_name, service in services.items() if isinstance(services, dict) else ():
        instances = service.get("instances") if isinstance(service, dict) else None
        for inst in instances if isinstance(instances, list) else ():
            if isinstance(inst, dict) and inst.get("headers") is container:
                return f"services.{service_name}.instances[{inst.get('name')}@{inst.get('base_url')}].headers.{key}"
    auth = doc.get("auth")
    keys = auth.get("keys") if isinstance(auth, dict) else None
    for item in keys if isinstance(keys, list) else ():
        if item is container:
            return f"auth.keys[{item.get('name')}].key"
    if doc.get("state") is container:
        return f"state.{key}"
    return f"store.{key}"


# --- secrets in the store ---------------------------------------------------------------------------------------

# Header names that carry credentials, matched anywhere in the name, case-insensitive: Authorization,
# Proxy-Authorization, X-API-Key, api-key, x-goog-api-key, X-Auth-Token, Cookie... Only these are kept out of the
# store: a header whose name says nothing of the kind (anthropic-version, OpenAI-Beta) is plain config, and
# refusing or masking it would break configs and hide real changes from history and diffs.
_CREDENTIAL_HEADER = re.compile(r"auth|key|token|secret|passw|cookie|credential", re.IGNORECASE)
# A secret the environment supplies: one ${VAR}, optionally after a scheme ("Bearer ${KEY}"). Not ${VAR:-default}:
# its default is a literal, and would be written into every version.
_FROM_ENV = re.compile(r"^(?:[A-Za-z][A-Za-z0-9._-]*\s+)?\$\{[A-Za-z_][A-Za-z0-9_]*\}$")
_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")
_STORED = "the store keeps config versions in the database"


def _literal(value: Any) -> bool:
    return value not in (None, "") and not (isinstance(value, str) and _FROM_ENV.match(value))


def _literal_secrets(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
    """(path, container, key) of every secret written literally: credential headers of upstream instances, client
    keys given by their secret, a password in ``store.database_url`` or ``state.url``."""
    found = []
    for path, container, key in _secret_places(doc):
        value = container[key]
        if path.startswith("services."):  # an upstream header: only one whose name says it carries a credential
            literal = isinstance(key, str) and bool(_CREDENTIAL_HEADER.search(key)) and _literal(value)
        elif path in ("store.database_url", "state.url"):  # only its password
            match = _URL_PASSWORD.match(value) if isinstance(value, str) else None
            literal = bool(match and match[2] and not _REFERENCE.match(match[2]))
        else:  # a client key given by its secret
            literal = _literal(value)
        if literal:
            found.append((path, container, key))
    return found


def secret_problems(text: str) -> list[str]:
    """Store mode: each secret ``text`` writes literally, as a problem naming its path. The database URL is not
    one: it is masked instead (``stored_text``), since the store is always opened from the file given at start."""
    problems = []
    for path, container, key in _literal_secrets(document(text)):
        if key == "database_url":
            continue
        how = "a ${ENV} reference (e.g. 'Bearer ${UPSTREAM_KEY}')"
        if path == "state.url":
            how = "a ${ENV} reference for the password (e.g. redis://:${REDIS_PASSWORD}@10.0.0.5:6379/0)"
        elif key == "key":
            how = "a ${ENV} reference, or as hash: 'sha256:...' (printed by `modelrouter keys hash`)"
        value = str(container[key])
        note = ""
        if MASK in value:
            note = " (masked when this version was recorded in file mode)"
        elif re.search(r"\$\{[^}]*:-", value):
            note = " (the default of a ${VAR:-default} is stored as written)"
        problems.append(f"{path}: a literal secret{note}: give it as {how}: {_STORED}")
    return problems


def stored_text(text: str) -> str:
    """``text`` as it may be stored: each literal secret replaced by ``MASK`` (a database URL keeps all but its
    password), the rest as written - comments and layout too, where the values can be replaced in place."""
    doc = document(text)
    if not _literal_secrets(doc):
        return text
    hidden = copy.deepcopy(doc)
    for _, container, key in _literal_secrets(hidden):
        value = container[key]
        match = _URL_PASSWORD.match(value) if key in _URLS else None
        container[key] = f"{match[1]}{MASK}{match[3]}" if match else MASK
    in_place = _replace_scalars(text, doc, hidden)
    return in_place if in_place is not None else dump_document(hidden)


def _replace_scalars(text: str, old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """``text`` (which parses to ``old``) with each scalar that ``new`` changes rewritten where it is written; None
    if the result would not parse to exactly ``new`` (anchors, merge keys, duplicate keys...): then the caller
    dumps ``new`` instead, losing comments but never a mask."""
    spans: dict[tuple[int, int], Any] = {}

    def walk(node: yaml.Node, before: Any, after: Any) -> None:
        if before == after:
            return
        if isinstance(node, yaml.ScalarNode):
            spans[(node.start_mark.index, node.end_mark.index)] = after
        elif isinstance(node, yaml.MappingNode) and isinstance(before, dict) and isinstance(after, dict):
            if len(node.value) == len(before):  # else merge or duplicate keys: the check below fails
                for (_, value), (key, old_value) in zip(node.value, before.items(), strict=True):
                    walk(value, old_value, after.get(key))
        elif isinstance(node, yaml.SequenceNode) and isinstance(before, list) and isinstance(after, list):
            for item, old_item, new_item in zip(node.value, before, after, strict=False):
                walk(item, old_item, new_item)  # masking replaces values, never items: equal lengths

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if root is not None:
            walk(root, old, new)
        out = text
        for (start, end), value in sorted(spans.items(), reverse=True):
            # A JSON string is a double-quoted YAML scalar: a bare ******** would be read as an alias.
            out = out[:start] + json.dumps(value, ensure_ascii=False) + out[end:]
        return out if document(out) == new else None
    except yaml.YAMLError:
        return None


# --- the control itself ------------------------------------------------------------------------------------------


class ConfigControl:
    """The gateway's config source. ``text`` is the YAML now serving, ``version`` its number in the store (None
    until the store is open). Changes are serialised by a lock: each is validated, saved as the next version
    (refused if made from an older one) and then applied."""

    def __init__(self, gateway: Reloadable, mode: Mode, text: str, source: str, *, import_text: bool = False) -> None:
        self.gateway = gateway
        self.mode: Mode = mode
        self.text = text
        self.source = source
        self.import_text = import_text
        self.version: int | None = None
        self.store: Store | None = None
        self._lock = asyncio.Lock()
        self.on_apply: Callable[[ConfigVersion], None] | None = None

    async def start(self, store: Store) -> None:
        """Called once the store is open, before traffic: record the file (file mode), or load the newest
        version (store mode; seeding version 1 from the file, or importing it when asked)."""
        self.store = store
        async with self._lock:
            latest = await store.latest_config_version()
            if self.mode == "store" and (latest is None or self.import_text):
                # The file is about to become a version: refused (the gateway does not start, the store is left
                # as it was) rather than write its literal secrets into the database.
                problems = secret_problems(self.text)
                if problems:
                    raise ConfigError(self.source, problems)
            await store.record_config_mode(self.mode)
            if self.mode == "file":
                await self._record_file(latest)
                return

            saved = None
            text = stored_text(self.text)
            try:
                if latest is None:
                    saved = await store.add_config_version(
                        text, author="seed", comment=f"seeded from {self.source}", based_on=None
                    )
                    log.info("config: store mode, version %d seeded from %s", saved.id, self.source)
                elif self.import_text and latest.config != text:
                    saved = await store.add_config_version(
                        text, author="import", comment=f"imported from {self.source}", based_on=latest.id
                    )
                    log.info("config: store mode, %s imported as version %d", self.source, saved.id)
            except StaleVersionError:  # another worker or replica starting at the same moment did it first
                latest = await store.latest_config_version()
            if saved is None:
                assert latest is not None
                saved = latest
                log.info("config: store mode, serving version %d from the store (%s not read)", saved.id, self.source)
            self._apply(saved)

    async def file_loaded(self, text: str) -> None:
        """File mode: the file was reloaded and now serves; record it as a version."""
        self.text = text
        if self.store is None:
            return
        async with self._lock:
            await self._record_file(await self.store.latest_config_version())

    async def _record_file(self, latest: ConfigVersion | None) -> None:
        assert self.store is not None
        # The file is the truth and is not refused for its literal secrets; the record of it has them masked.
        text = stored_text(self.text)
        if latest is not None and latest.config == text:
            self.version = latest.id  # a restart with the same file is not a new version
            return

        try:
            saved = await self.store.add_config_version(
                text, author="file", comment=f"loaded from {self.source}", based_on=latest.id if latest else None
            )
        except StaleVersionError:  # another worker loaded the file at the same moment: its version is ours
            latest = await self.store.latest_config_version()
            if latest is not None and latest.config == text:
                self.version = latest.id
                return
            raise
        self.version = saved.id
        log.info("config: version %d recorded from %s", saved.id, self.source)

    def document(self) -> dict[str, Any]:
        return document(self.text)

    async def change(self, doc: dict[str, Any], *, author: str, comment: str, based_on: int) -> ConfigVersion:
        """Validate ``doc``, save it as the next version and apply it (store mode only)."""
        return await self._save(dump_document(doc), author=author, comment=comment, based_on=based_on)

    async def restore(self, version_id: int, *, author: str, based_on: int) -> ConfigVersion:
        """Roll back (or forward): a new version with the text of ``version_id``, applied."""
        store = self.writable()
        old = await store.get_config_version(version_id)
        if old is None:
            raise NotFound(f"there is no config version {version_id}", code="not_found")
        return await self._save(
            old.config, author=author, comment=f"rollback to version {version_id}", based_on=based_on
        )

    async def _save(self, text: str, *, author: str, comment: str, based_on: int) -> ConfigVersion:
        store = self.writable()
        try:
            config = parse_text(text)
        except ConfigError as exc:
            raise InvalidConfig(exc.problems) from None
        problems = secret_problems(text) + self.gateway.refusals(config)
        if problems:
            raise InvalidConfig(problems)
        text = stored_text(text)  # the database URL's password, if any

        async with self._lock:
            try:
                saved = await store.add_config_version(text, author=author, comment=comment, based_on=based_on)
            except StaleVersionError as exc:
                raise VersionConflict(str(exc), param="version") from None
            self._apply(saved)
        return saved

    def writable(self) -> Store:
        if self.mode == "file":
            raise ConfigReadOnly(file_mode_refusal(self.source))
        if self.store is None:
            raise GatewayError("the store is not open yet")
        return self.store

    async def refresh(self) -> None:
        """Store mode: apply a version made by another process (the CLI, another replica)."""
        if self.mode != "store" or self.store is None:
            return
        latest_id = await self.store.latest_config_version_id()
        if latest_id is None or latest_id == self.version:
            return
        async with self._lock:
            latest = await self.store.latest_config_version()
            if latest is not None and latest.id != self.version:
                self._apply(latest)

    def _apply(self, version: ConfigVersion) -> None:
        """Serve ``version`` (through the gateway's atomic swap). A stored version that no longer validates
        (an environment variable gone) is logged and skipped: the running config stays."""
        if version.config != self.text:
            try:
                config = parse_text(version.config, f"config version {version.id}")
            except ConfigError as exc:
                log.error("config version %d cannot be applied, keeping the running config: %s", version.id, exc)
                self.version = version.id  # do not try it again on every poll
                return
            masks = [
                p for p, c, k in _literal_secrets(document(version.config)) if k != "database_url" and MASK in str(c[k])
            ]
            if masks:
                # Recorded in file mode (then the store served in store mode): ******** would go upstream as the
                # credential. As for a version that does not validate, the running config stays.
                log.error(
                    "config version %d cannot be applied, keeping the running config: it was recorded in file mode "
                    "with its literal secrets masked (%s); give them as ${ENV} references and import the file "
                    "(serve --import, or modelrouter config import FILE)",
                    version.id,
                    ", ".join(masks),
                )
                self.version = version.id
                return
            try:
                self.gateway.reload(config)
            except ConfigError as exc:  # made elsewhere (the CLI): valid, but this process may not serve it
                log.error("config version %d cannot be applied, keeping the running config: %s", version.id, exc)
                self.version = version.id
                return
            self.text = version.config
        self.version = version.id
        log.info("config: version %d serving (%s, by %s)", version.id, version.comment or "-", version.author)
        if self.on_apply is not None:
            self.on_apply(version)

    def __repr__(self) -> str:
        return f"<ConfigControl {self.mode} mode, version {self.version}>"
