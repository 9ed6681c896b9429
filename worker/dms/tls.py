"""TLS contexts for outgoing HTTPS: the CAs trusted, and a client certificate for X.509 (mTLS) token requests.

``ssl`` loads certificates and keys only from files, so a PEM key from a binding is written to a private
temporary directory, loaded, and removed at once; it is never kept on disk or put in an error message.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path

from worker.errors import TokenRejected


def trust_context(ca_bundle: Path | None = None) -> ssl.SSLContext:
    """The system's CAs (``SSL_CERT_FILE``/``SSL_CERT_DIR`` honoured), plus those in ``ca_bundle``."""
    context = ssl.create_default_context()
    if ca_bundle is not None:
        context.load_verify_locations(cafile=str(ca_bundle))
    return context


def client_certificate_context(certificate: str, key: str, ca_bundle: Path | None = None) -> ssl.SSLContext:
    """A context that presents ``certificate`` (PEM chain) with ``key`` (PEM private key) to the server."""
    context = trust_context(ca_bundle)
    with tempfile.TemporaryDirectory(prefix="dms-worker-mtls-") as directory:
        cert_path, key_path = Path(directory, "certificate.pem"), Path(directory, "key.pem")
        for path, text in ((cert_path, certificate), (key_path, key)):
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(text if text.endswith("\n") else text + "\n")
        try:
            context.load_cert_chain(certfile=str(cert_path), keyfile=str(key_path))
        except ssl.SSLError as exc:  # the reason only: OpenSSL's text never holds the key, but say less anyway
            raise TokenRejected(f"the X.509 certificate and key do not load: {exc.reason or 'invalid PEM'}") from None
    return context
