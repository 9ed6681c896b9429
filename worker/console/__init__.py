"""The operator console (``python -m worker console``): dead letters, outcomes and the fleet in a browser.

A process of its own that needs the broker and nothing else: ``auth`` (tokens, sessions, CSRF, roles),
``index`` (what the DLQ holds, without reading it for every page), ``jobs`` (replays and purges with
progress, rate, cancel and history), ``feed`` (result events and heartbeats), ``pages`` (the views, with
``forms`` reading their fields and ``shown`` deciding what a page may show) and
``app`` (the process). Dead letters are read and replayed by ``worker.results.dead_letters``, as the CLI does.
"""
