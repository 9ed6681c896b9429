"""Secrets that arrive through service bindings are as hidden as configured ones: reprs and log lines."""

from __future__ import annotations

import json

import aiohttp

from tests.certificates import CertificateAuthority
from worker.dms.tokens import TokenCache
from worker.runtime import logs
from worker.runtime.app import DmsClients
from worker.settings import Settings


async def test_binding_secrets_are_registered_with_the_log_redactor_and_kept_out_of_reprs() -> None:
    issued = CertificateAuthority().issue("x509-client")
    vcap = {
        "sdm": [
            {
                "credentials": {
                    "uri": "https://dms.example/",
                    "uaa": {
                        "clientid": "sb-x509",
                        "credential-type": "x509",
                        "certificate": issued.certificate,
                        "key": issued.key,
                        "certurl": "https://uaa.cert.example",
                    },
                }
            }
        ],
        "destination": [
            {
                "credentials": {
                    "uri": "https://destination.example",
                    "clientid": "dest",
                    "clientsecret": "destination-binding-s3cret",
                    "url": "https://uaa.example",
                }
            }
        ],
    }
    settings = Settings(_env_file=None, vcap_services=json.dumps(vcap))
    async with aiohttp.ClientSession() as http:
        clients = DmsClients(settings, http, TokenCache(http), timeout_s=1.0, user=settings.dms_user)
    assert clients.bindings.dms is not None and clients.destination_service is not None
    shown = repr(settings) + repr(clients.bindings) + repr(clients.bindings.dms) + str(clients.bindings.dms)
    for secret in (issued.key, "destination-binding-s3cret"):
        assert secret not in shown
        assert secret not in logs.redact_text(f"oops: {secret}")
