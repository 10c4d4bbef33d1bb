"""One settings policy for the components (contracts.settings): options naming no setting are
refused, the environment's unknown variables never stop a start and typos are named."""

from __future__ import annotations

import pytest
from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import SettingsConfigDict

from contracts.settings import ComponentSettings, variables_of
from reconciler.settings import ReconcilerSettings
from server.settings import ServerSettings
from sidecar.settings import SidecarSettings


class Example(ComponentSettings):
    model_config = SettingsConfigDict(env_prefix="EXAMPLE_")

    interval: float = 1.0
    tracking_uri: str | None = Field(
        default=None, validation_alias=AliasChoices("EXAMPLE_TRACKING_URI", "MLFLOW_TRACKING_URI")
    )


@pytest.mark.parametrize("component", [ReconcilerSettings, SidecarSettings, ServerSettings])
def test_every_component_follows_the_one_policy(component: type[ComponentSettings]) -> None:
    assert issubclass(component, ComponentSettings)
    assert component.model_config["extra"] == "forbid"
    assert str(component.model_config["env_prefix"]).endswith("_")


def test_an_option_naming_no_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="intervall"):
        Example(intervall=2)  # type: ignore[call-arg]
    monkeypatch.setenv("EXAMPLE_INTERVAL", "3")
    assert Example(interval=2).interval == 2  # the command line wins over the environment


def test_unknown_variables_never_stop_a_start_and_typos_are_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    environ = {"EXAMPLE_INTERVALL": "2", "EXAMPLE_INTERVAL": "2", "HOME": "/root",
               "MLFLOW_TRACKING_URI": "http://m", "EXAMPLE_TRACKING_URI": "http://m",
               "EXAMPLE_LOG_LEVEL": "INFO"}  # fmt: skip
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert Example().tracking_uri == "http://m"
    assert Example.unknown_variables(environ, also=["example_log_level"]) == ["EXAMPLE_INTERVALL"]
    read = {"EXAMPLE_INTERVAL", "EXAMPLE_TRACKING_URI", "MLFLOW_TRACKING_URI"}
    assert variables_of(Example) == read
