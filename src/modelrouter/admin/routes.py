"""The admin API's route table: method, path, handler and the least role allowed to call it. Reads are open to
viewers, config and key changes to operators, admin accounts and the raw config export to admins."""

from __future__ import annotations

from . import admins, keys, session, state
from . import config_routes as config
from .calls import Route, route

__all__ = ["ROUTES"]

ROUTES: tuple[Route, ...] = (
    route("POST", "/admin/api/login", session.login, None),
    route("POST", "/admin/api/logout", session.logout, "viewer"),  # every role may end its own session
    route("GET", "/admin/api/me", session.me, "viewer"),
    # client keys
    route("GET", "/admin/api/keys", keys.list_keys, "viewer"),
    route("POST", "/admin/api/keys", keys.create_key, "operator"),
    route("POST", "/admin/api/keys/{id}/disable", keys.disable_key, "operator"),
    route("POST", "/admin/api/keys/{id}/enable", keys.enable_key, "operator"),
    route("POST", "/admin/api/keys/{id}/revoke", keys.revoke_key, "operator"),
    route("POST", "/admin/api/keys/{id}/rotate", keys.rotate_key, "operator"),
    route("DELETE", "/admin/api/keys/{id}", keys.delete_key, "operator"),
    # admin users and the audit log
    route("GET", "/admin/api/admins", admins.list_admins, "viewer"),
    route("POST", "/admin/api/admins", admins.create_admin, "admin"),
    route("PATCH", "/admin/api/admins/{username}", admins.update_admin, "admin"),
    route("POST", "/admin/api/admins/{username}/password", admins.set_admin_password, "viewer"),  # own, or admin
    route("GET", "/admin/api/audit", admins.list_audit, "viewer"),
    # the config and its versions
    route("GET", "/admin/api/config", config.get_config, "viewer"),
    route("PUT", "/admin/api/config", config.put_config, "operator"),
    route("GET", "/admin/api/config/export", config.export_config, "admin"),
    route("GET", "/admin/api/config/versions", config.list_versions, "viewer"),
    route("GET", "/admin/api/config/versions/{version}", config.get_version, "viewer"),
    route("POST", "/admin/api/config/versions/{version}/apply", config.apply_version, "operator"),
    route("GET", "/admin/api/config/diff", config.diff_versions, "viewer"),
    route("GET", "/admin/api/config/sections/{section}", config.get_section, "viewer"),
    route("PUT", "/admin/api/config/sections/{section}", config.put_section, "operator"),
    route("GET", "/admin/api/services", config.list_services, "viewer"),
    route("GET", "/admin/api/services/{service}", config.get_service, "viewer"),
    route("PUT", "/admin/api/services/{service}", config.put_service, "operator"),
    route("PATCH", "/admin/api/services/{service}", config.edit_service, "operator"),
    route("DELETE", "/admin/api/services/{service}", config.delete_service, "operator"),
    route("POST", "/admin/api/services/{service}/instances", config.add_instance, "operator"),
    route("PUT", "/admin/api/services/{service}/instances/{name}", config.put_instance, "operator"),
    route("PATCH", "/admin/api/services/{service}/instances/{name}", config.edit_instance, "operator"),
    route("DELETE", "/admin/api/services/{service}/instances/{name}", config.delete_instance, "operator"),
    # what the gateway is doing
    route("GET", "/admin/api/state", state.state, "viewer"),
    route("GET", "/admin/api/usage", state.usage, "viewer"),
    route("GET", "/admin/api/usage/records", state.usage_records, "viewer"),
)
