"""``unknown_variables``: which ``DMS_WORKER_*`` variables name no setting, as pydantic-settings reads them."""

from __future__ import annotations

import pytest

from worker.settings import Settings, unknown_variables


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
