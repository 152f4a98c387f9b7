"""AgentConfig.from_env: the settings a container sets, and clear errors for bad ones."""

from __future__ import annotations

import pytest

from tidegate.agent.config import DEFAULT_CONTROL, AgentConfig, AgentConfigError


def test_defaults_need_only_the_service() -> None:
    config = AgentConfig.from_env({"TIDEGATE_SERVICE": "orders"})
    assert config == AgentConfig(service="orders", control=DEFAULT_CONTROL)


def test_every_variable_is_read() -> None:
    config = AgentConfig.from_env(
        {
            "TIDEGATE_SERVICE": "orders",
            "TIDEGATE_TAG": "gray",
            "TIDEGATE_CONTROL": "http://cp:9000/",
            "TIDEGATE_TOKEN": "s3cret-s3cret-s3cret",
            "TIDEGATE_ADMIN_PORT": "9901",
            "TIDEGATE_HOST": "10.0.0.7",
            "TIDEGATE_HEARTBEAT_INTERVAL": "0.5",
        }
    )
    assert (config.tag, config.control, config.token, config.admin_port, config.advertise_host, config.heartbeat_interval) == (
        "gray",
        "http://cp:9000",
        "s3cret-s3cret-s3cret",
        9901,
        "10.0.0.7",
        0.5,
    )


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "TIDEGATE_SERVICE"),
        ({"TIDEGATE_SERVICE": "no spaces"}, "TIDEGATE_SERVICE"),
        ({"TIDEGATE_SERVICE": "a", "TIDEGATE_TAG": "gr ay"}, "TIDEGATE_TAG"),
        ({"TIDEGATE_SERVICE": "a", "TIDEGATE_CONTROL": "cp:7070"}, "TIDEGATE_CONTROL"),
        ({"TIDEGATE_SERVICE": "a", "TIDEGATE_ADMIN_PORT": "http"}, "TIDEGATE_ADMIN_PORT"),
        ({"TIDEGATE_SERVICE": "a", "TIDEGATE_ADMIN_PORT": "70000"}, "TIDEGATE_ADMIN_PORT"),
        ({"TIDEGATE_SERVICE": "a", "TIDEGATE_HEARTBEAT_INTERVAL": "soon"}, "TIDEGATE_HEARTBEAT_INTERVAL"),
        ({"TIDEGATE_SERVICE": "a", "TIDEGATE_HEARTBEAT_INTERVAL": "0"}, "TIDEGATE_HEARTBEAT_INTERVAL"),
    ],
)
def test_bad_value_names_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(AgentConfigError) as caught:
        AgentConfig.from_env(env)
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable}: ")


def test_lane_key_is_read_and_checked() -> None:
    import pytest

    from tidegate.agent.config import AgentConfig, AgentConfigError

    assert AgentConfig.from_env({"TIDEGATE_SERVICE": "s"}).lane_key == "tidegate.lane"
    assert AgentConfig.from_env({"TIDEGATE_SERVICE": "s", "TIDEGATE_LANE_KEY": "x-env"}).lane_key == "x-env"
    with pytest.raises(AgentConfigError, match="TIDEGATE_LANE_KEY"):
        AgentConfig.from_env({"TIDEGATE_SERVICE": "s", "TIDEGATE_LANE_KEY": "a b"})
