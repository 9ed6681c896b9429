"""What ``run`` says about its configuration before it waits for the broker: a worker with no DMS destination
starts and consumes, then fails every upload, so the first screen of its log says so, once per process."""

from __future__ import annotations

import structlog

from worker.dms.bindings import Bindings, discover
from worker.dms.destinations import DestinationSources, readiness_target
from worker.settings import DestinationSettings

log = structlog.get_logger(__name__)

NO_DESTINATION_HINT = (
    "uploads fail with unknown_tenant until one is set: DMS_WORKER_DESTINATION, DMS_WORKER_TENANT_DESTINATIONS, "
    "or a DMS (sdm) or Destination service binding in VCAP_SERVICES / SERVICE_BINDING_ROOT"
)


def destination_sources(settings: DestinationSettings, bindings: Bindings) -> DestinationSources:
    """Every place a destination can come from, for these settings and the discovered bindings."""
    return DestinationSources(
        tenant_destinations=settings.tenant_destinations,
        destination=settings.destination,
        bound_dms=bindings.dms,
        destination_service=bindings.destination_service is not None,
        tenant_destination_names=settings.tenant_destination_names,
        destination_name=settings.destination_name,
    )


def warn_if_no_destination(settings: DestinationSettings) -> None:
    """One ``no_dms_destination`` warning when no tenant can have a destination: the question ``/readyz``
    asks (``readiness_target``), answered before the broker is reached rather than only by a 503."""
    vcap = settings.vcap_services.get_secret_value() if settings.vcap_services is not None else None
    bindings = discover(vcap, settings.service_binding_root)
    if readiness_target(destination_sources(settings, bindings)) is None:
        log.warning("no_dms_destination", hint=NO_DESTINATION_HINT)
