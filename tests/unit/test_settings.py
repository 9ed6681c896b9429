"""``unknown_variables``: which ``DMS_WORKER_*`` variables name no setting, as pydantic-settings reads them; the
groups per stage that ``Settings`` is made of, and the views a stage is given."""

from __future__ import annotations

import uuid

import pydantic
import pytest

from worker.dms.destinations import Destination
from worker.settings import (
    CommandSettings,
    DestinationSettings,
    Settings,
    StageSettings,
    TopologySettings,
    unknown_variables,
)

GROUPS = [
    group for group in Settings.__mro__ if issubclass(group, StageSettings) and group not in {Settings, StageSettings}
]


class TestUnknownVariables:
    """Pins which names count as a setting: the ones pydantic-settings would read, and no others."""

    def test_every_setting_is_known(self) -> None:
        platform = {"vcap_services", "service_binding_root"}  # read without the prefix
        names = {f"DMS_WORKER_{name.upper()}": "x" for name in Settings.model_fields if name not in platform}
        assert unknown_variables(names) == []

    def test_misspelt_names_are_listed_sorted(self) -> None:
        environ = {"DMS_WORKER_SHARD_CONT": "3", "DMS_WORKER_FOO": "1", "DMS_WORKER_SHARD_COUNT": "3"}
        assert unknown_variables(environ) == ["DMS_WORKER_FOO", "DMS_WORKER_SHARD_CONT"]

    def test_a_nested_variable_counts_as_its_first_part(self) -> None:
        environ = {"DMS_WORKER_DESTINATION__URI": "https://dms/", "DMS_WORKER_DESTINATON__URI": "https://dms/"}
        assert unknown_variables(environ) == ["DMS_WORKER_DESTINATON__URI"]

    def test_other_variables_are_none_of_its_business(self) -> None:
        environ = {"PATH": "/bin", "VCAP_SERVICES": "{}", "SERVICE_BINDING_ROOT": "/b", "OTEL_SERVICE_NAME": "x"}
        assert unknown_variables(environ) == []

    def test_names_are_compared_ignoring_case_as_pydantic_settings_reads_them(self) -> None:
        assert unknown_variables({"dms_worker_shard_count": "3", "dms_worker_shard_cont": "3"}) == [
            "dms_worker_shard_cont"
        ]

    @pytest.mark.parametrize("name", ["DMS_WORKER_VCAP_SERVICES", "DMS_WORKER_SERVICE_BINDING_ROOT"])
    def test_a_platform_variable_with_our_prefix_is_unknown(self, name: str) -> None:
        """They are read under the platform's own name only: with the prefix they would be ignored."""
        assert unknown_variables({name: "x"}) == [name]

    def test_the_process_environment_by_default(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("DMS_WORKER_SHARD_CONT", "3")
        assert "DMS_WORKER_SHARD_CONT" in unknown_variables()


class TestGroups:
    """Pins that every setting is declared in exactly one stage's group, and what ``view`` hands a stage."""

    def test_every_setting_is_declared_in_exactly_one_group(self) -> None:
        declared = [name for group in GROUPS for name in group.__annotations__ if name in group.model_fields]
        assert sorted(declared) == sorted(Settings.model_fields)  # none twice (the MRO would hide one), none outside

    def test_a_group_declares_a_setting_as_settings_does(self) -> None:
        for group in GROUPS:
            for name, field in group.model_fields.items():
                assert repr(field) == repr(Settings.model_fields[name]), name

    def test_a_view_holds_the_loaded_values_and_cannot_be_changed(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("DMS_WORKER_MAX_FILE_SIZE", "1234")
        monkeypatch.setenv("DMS_WORKER_SHARD_COUNT", "3")
        settings = Settings(_env_file=None)
        commands = settings.view(CommandSettings)
        assert type(commands) is CommandSettings
        assert commands.model_dump() == settings.model_dump(include=set(CommandSettings.model_fields))
        assert commands.max_file_size == 1234 and settings.view(TopologySettings).shard_count == 3
        with pytest.raises(pydantic.ValidationError, match="frozen"):
            commands.max_file_size = 1  # type: ignore[misc]

    def test_a_view_shares_what_tests_add_to_the_destinations_in_place(self) -> None:
        settings = Settings(_env_file=None)
        view = settings.view(DestinationSettings)
        tenant = uuid.uuid4()
        settings.tenant_destinations[tenant] = Destination(
            url="https://dms.example/", client_id="c", client_secret="s", token_url="https://uaa.example/token"
        )
        assert tenant in view.tenant_destinations

    def test_a_group_built_directly_has_the_same_defaults_and_checks(self) -> None:
        assert CommandSettings().model_dump() == Settings(_env_file=None).view(CommandSettings).model_dump()
        with pytest.raises(pydantic.ValidationError):
            CommandSettings(max_file_size=0)

    def test_only_a_group_of_settings_can_be_viewed(self) -> None:
        class Elsewhere(StageSettings):
            nothing: int = 0

        with pytest.raises(TypeError, match="not a group"):
            Settings(_env_file=None).view(Elsewhere)
