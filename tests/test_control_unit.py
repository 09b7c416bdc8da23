"""Masking secrets in config views, and putting them back when an edited view is saved."""

from __future__ import annotations

import pytest

from modelrouter.control.source import MASK, InvalidConfig, masked, unmask


def _doc() -> dict[str, object]:
    return {
        "services": {
            "chat": {
                "instances": [
                    {
                        "name": "m",
                        "base_url": "http://a",
                        "headers": {"Authorization": "Bearer sk-1", "X-Env": "${TOKEN}"},
                    },
                    {"name": "m", "base_url": "http://b", "headers": {"Authorization": "Bearer sk-2"}},
                ]
            }
        },
        "auth": {"keys": [{"name": "team", "key": "mr-literal-secret-000000"}, {"name": "env", "key": "${TEAM_KEY}"}]},
        "store": {"database_url": "postgresql://app:hunter2@db/modelrouter"},
    }


def test_views_mask_literal_secrets_and_show_references() -> None:
    view = masked(_doc())
    a, b = view["services"]["chat"]["instances"]  # type: ignore[index]
    assert a["headers"] == {"Authorization": MASK, "X-Env": "${TOKEN}"}
    assert b["headers"] == {"Authorization": MASK}
    assert view["auth"]["keys"] == [{"name": "team", "key": MASK}, {"name": "env", "key": "${TEAM_KEY}"}]  # type: ignore[index]
    assert view["store"]["database_url"] == f"postgresql://app:{MASK}@db/modelrouter"  # type: ignore[index]
    assert "sk-1" not in str(view)
    assert "hunter2" not in str(view)


def test_an_edited_view_gets_its_secrets_back_by_place_not_position() -> None:
    current = _doc()
    edited = masked(current)
    instances = edited["services"]["chat"]["instances"]  # type: ignore[index]
    instances.reverse()  # positions change; each instance keeps its own secret
    instances[0]["weight"] = 3
    restored = unmask(edited, current)
    by_url = {i["base_url"]: i["headers"]["Authorization"] for i in restored["services"]["chat"]["instances"]}
    assert by_url == {"http://a": "Bearer sk-1", "http://b": "Bearer sk-2"}
    assert restored["store"]["database_url"] == "postgresql://app:hunter2@db/modelrouter"
    assert restored["auth"]["keys"][0]["key"] == "mr-literal-secret-000000"


def test_a_mask_where_there_was_no_secret_is_refused() -> None:
    current = _doc()
    edited = masked(current)
    edited["services"]["chat"]["instances"].append(  # type: ignore[index]
        {"name": "m", "base_url": "http://c", "headers": {"Authorization": MASK}}
    )
    with pytest.raises(InvalidConfig, match=r"instances\[m@http://c\]\.headers\.Authorization: a masked secret"):
        unmask(edited, current)
