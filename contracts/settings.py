"""The settings policy of the three components, defined once (pydantic-settings).

Each component has one settings class, derived from :class:`ComponentSettings` with its own
``env_prefix`` (``RECONCILER_``, ``SIDECAR_``, ``SERVER_``; MLflow's own variables such as
``MLFLOW_TRACKING_URI`` are validation aliases), built once in its entry point and passed down.
A command line's options are keyword arguments of that class and win over the environment.

``extra="forbid"``: pydantic-settings reads from the environment only the variables of the
fields, under any ``extra`` policy, so the policy decides what happens to names it is handed:
a keyword argument (a command-line option) or a dotenv entry that names no setting is a mistake
and refused at once. The environment is shared with everything else in a pod or CI job, so a
variable with the component's prefix that names no setting (a typo) never stops a start: each
entry point names it in a warning (:meth:`ComponentSettings.unknown_variables`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pydantic import AliasChoices
from pydantic_settings import BaseSettings, SettingsConfigDict


def variables_of(settings: type[BaseSettings]) -> set[str]:
    """The environment variables a settings class reads, upper case (a field with a validation
    alias is read under its alias names only, as pydantic-settings does)."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    names: set[str] = set()
    for name, field in settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(choice for choice in alias.choices if isinstance(choice, str))
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.add(f"{prefix}{field.alias or name}")
    return {name.upper() for name in names}


class ComponentSettings(BaseSettings):
    """The base of ``ReconcilerSettings``, ``SidecarSettings`` and ``ServerSettings``."""

    model_config = SettingsConfigDict(extra="forbid")

    @classmethod
    def unknown_variables(
        cls, environ: Mapping[str, str], *, also: Iterable[str] = ()
    ) -> list[str]:
        """Variables of ``environ`` with the settings' prefix that name no setting, sorted.

        Args:
            environ: the environment (``os.environ``).
            also: variables with the prefix the entry point reads itself (e.g. a log level).
        """
        prefix = str(cls.model_config.get("env_prefix", "")).upper()
        if not prefix:
            return []
        known = variables_of(cls) | {name.upper() for name in also}
        return sorted(
            name
            for name in environ
            if name.upper().startswith(prefix) and name.upper() not in known
        )
