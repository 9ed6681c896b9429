"""Settings as the ``DMS_WORKER_*`` variables that give them back: to start replicas, the CLI and benchmarks in
processes of their own with a test's settings."""

from __future__ import annotations

import json

from worker.settings import Settings


def as_environment(settings: Settings) -> dict[str, str]:
    """These settings as ``DMS_WORKER_*`` variables (secrets included): to start replicas with them."""
    env: dict[str, str] = {}
    platform = {"vcap_services", "service_binding_root"}
    plain = settings.model_dump(
        mode="json",
        exclude={"amqp_url", "amqp_urls", "destination", "tenant_destinations", "console_users", *platform},
    )
    for key, value in plain.items():
        env[f"DMS_WORKER_{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    env["DMS_WORKER_AMQP_URL"] = settings.amqp_url.get_secret_value()
    if settings.amqp_urls:
        env["DMS_WORKER_AMQP_URLS"] = json.dumps([url.get_secret_value() for url in settings.amqp_urls])
    if settings.destination is not None:
        env["DMS_WORKER_DESTINATION"] = json.dumps(settings.destination.as_properties())
    if settings.tenant_destinations:
        env["DMS_WORKER_TENANT_DESTINATIONS"] = json.dumps(
            {str(t): d.as_properties() for t, d in settings.tenant_destinations.items()}
        )
    if settings.console_users:
        env["DMS_WORKER_CONSOLE_USERS"] = json.dumps(
            {name: {"role": u.role, "token": u.token.get_secret_value()} for name, u in settings.console_users.items()}
        )
    if settings.vcap_services is not None:
        env["VCAP_SERVICES"] = settings.vcap_services.get_secret_value()
    if settings.service_binding_root is not None:
        env["SERVICE_BINDING_ROOT"] = str(settings.service_binding_root)
    return env
