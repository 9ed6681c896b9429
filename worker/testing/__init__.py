"""Tools for tests, demos and local runs, never for production: the DMS emulator (``emulator/``, a real
aiohttp server that behaves like SAP DMS; NOT SAP DMS) and the end-to-end demo (``demo.py``).

Production modules must not import this package (ruff's TID251 bans it outside ``tests/``, this package
and the two lazy CLI entry points), and the production image leaves it out (``deploy/Dockerfile``).
Run them with ``python -m worker.testing.emulator`` and ``python -m worker.testing.demo``, or through
``python -m worker emulator|demo``.
"""
