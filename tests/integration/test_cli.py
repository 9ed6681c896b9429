"""The CLI as a user runs it (``python -m worker ...`` in a subprocess) against the real broker and an
in-process worker + emulator: mistakes give one line and the right exit code, ``publish --wait`` reports
the outcome, ``results`` follows events, the DLQ tools show progress and guard the purge."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import signal
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.environment import as_environment
from worker.producer import upload_command

from .conftest import Stack, StackFactory

pytestmark = pytest.mark.integration

TENANT = "0b6c3f0e-2a7f-4a59-9d4e-5b8f6f0f2c11"
CLOSED_PORT_URL = "amqp://guest:guest@127.0.0.1:1/"


@dataclass
class Outcome:
    code: int | None
    out: str
    err: str

    def rows(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.splitlines()]

    def assert_one_line_mistake(self, code: int, *words: str) -> str:
        lines = self.err.strip().splitlines()
        assert self.code == code, self.err
        assert len(lines) == 1 and "Traceback" not in self.err, self.err
        assert all(word in lines[0] for word in words), lines[0]
        return lines[0]


def environment(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DMS_WORKER_")}
    return {**env, **variables}


async def start_cli(*args: str, env: dict[str, str], cwd: Path, **streams: int) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker",
        *args,
        env=env,
        cwd=cwd,
        stdout=streams.get("stdout", asyncio.subprocess.PIPE),
        stderr=streams.get("stderr", asyncio.subprocess.PIPE),
    )


async def cli(*args: str, env: dict[str, str], cwd: Path, timeout: float = 60) -> Outcome:
    process = await start_cli(*args, env=env, cwd=cwd)
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    return Outcome(process.returncode, out.decode(), err.decode())


def stack_env(stack: Stack) -> dict[str, str]:
    return environment(**as_environment(stack.settings))


class TestMistakes:
    """Each mistake from issue 15: one line naming the problem and the fix, no traceback, 2 or 1."""

    async def test_broker_down(self, tmp_path: Path) -> None:
        (tmp_path / "a.txt").write_text("hello")
        outcome = await cli(
            "publish", "a.txt", "--tenant", TENANT, env=environment(DMS_WORKER_AMQP_URL=CLOSED_PORT_URL), cwd=tmp_path
        )
        outcome.assert_one_line_mistake(1, "cannot reach the broker", "127.0.0.1:1", "DMS_WORKER_AMQP_URL")
        for args in (["results"], ["dlq", "list"]):
            outcome = await cli(*args, env=environment(DMS_WORKER_AMQP_URL=CLOSED_PORT_URL), cwd=tmp_path)
            outcome.assert_one_line_mistake(1, "cannot reach the broker")

    @pytest.mark.parametrize("url", ["not a url", "http://localhost:5672", "foo://guest:guest@127.0.0.1:5672/"])
    async def test_a_malformed_broker_url(self, tmp_path: Path, url: str) -> None:
        (tmp_path / "a.txt").write_text("hello")
        env = environment(DMS_WORKER_AMQP_URL=url, DMS_WORKER_HTTP_PORT="0", DMS_WORKER_SHUTDOWN_GRACE_S="5")
        expected = (
            "error: DMS_WORKER_AMQP_URL is invalid: not a broker URL; give one like "
            "amqp://user:password@host:5672/vhost (or amqps://): fix it (the README's Configuration table shows "
            "the form)"
        )
        for args in (["publish", "a.txt", "--tenant", TENANT], ["dlq", "list"], ["run"]):
            process = await start_cli(*args, env=env, cwd=tmp_path)
            try:  # a bounded wait, then what an operator would do: SIGTERM, and the drain grace
                out, err = await asyncio.wait_for(process.communicate(), 10)
            except TimeoutError:
                process.send_signal(signal.SIGTERM)
                out, err = await asyncio.wait_for(process.communicate(), 5)
            outcome = Outcome(process.returncode, out.decode(), err.decode())
            assert outcome.assert_one_line_mistake(2) == expected, args

    async def test_sigterm_ends_a_run_whose_broker_never_answers(self, tmp_path: Path) -> None:
        """A listener that accepts and never speaks: the AMQP handshake hangs (up to its 10 s timeout)."""
        silent: list[asyncio.StreamWriter] = []
        server = await asyncio.start_server(lambda _r, writer: silent.append(writer), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        env = environment(
            DMS_WORKER_AMQP_URL=f"amqp://guest:guest@127.0.0.1:{port}/",
            DMS_WORKER_HTTP_PORT="0",
            DMS_WORKER_SHUTDOWN_GRACE_S="5",
        )
        try:
            process = await start_cli("run", env=env, cwd=tmp_path)
            for _ in range(50):  # until the worker is inside its first handshake
                if silent:
                    break
                await asyncio.sleep(0.1)
            assert silent, "the worker never connected"
            await asyncio.sleep(1)
            process.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(process.communicate(), 5)  # within the drain grace
            assert process.returncode == 0 and "Traceback" not in err.decode(), err.decode()
        finally:
            server.close()
            for writer in silent:
                writer.close()

    async def test_the_password_is_not_shown(self, tmp_path: Path) -> None:
        env = environment(DMS_WORKER_AMQP_URL="amqp://guest:hunter2-secret@127.0.0.1:1/")
        outcome = await cli("dlq", "list", env=env, cwd=tmp_path)
        assert "hunter2-secret" not in outcome.assert_one_line_mistake(1, "cannot reach the broker")

    async def test_debug_shows_the_traceback(self, tmp_path: Path) -> None:
        outcome = await cli(
            "--debug", "dlq", "list", env=environment(DMS_WORKER_AMQP_URL=CLOSED_PORT_URL), cwd=tmp_path
        )
        assert outcome.code == 1 and "Traceback" in outcome.err

    async def test_invalid_json_in_tenant_destinations(self, tmp_path: Path) -> None:
        env = environment(DMS_WORKER_TENANT_DESTINATIONS='{"0b6c3f0e-2a7f-4a59-9d4e-5b8f6f0f2c11": {uri: 1}')
        outcome = await cli("run", env=env, cwd=tmp_path)
        outcome.assert_one_line_mistake(2, "DMS_WORKER_TENANT_DESTINATIONS", "not valid JSON")
        env = environment(DMS_WORKER_TENANT_DESTINATIONS='{"not-a-uuid": {}}')
        outcome = await cli("run", env=env, cwd=tmp_path)
        outcome.assert_one_line_mistake(2, "DMS_WORKER_TENANT_DESTINATIONS", "UUID")

    async def test_a_missing_file(self, tmp_path: Path) -> None:
        outcome = await cli("publish", "nowhere.pdf", "--tenant", TENANT, env=environment(), cwd=tmp_path)
        outcome.assert_one_line_mistake(2, "nowhere.pdf", "no such file")

    async def test_a_malformed_tenant(self, tmp_path: Path) -> None:
        (tmp_path / "a.txt").write_text("hello")
        outcome = await cli("publish", "a.txt", "--tenant", "0b6c3f0e-2a7f", env=environment(), cwd=tmp_path)
        outcome.assert_one_line_mistake(2, "--tenant", "'0b6c3f0e-2a7f' is not a UUID")

    async def test_the_worker_waits_for_the_broker_logging_each_try_once(self, tmp_path: Path) -> None:
        env = environment(DMS_WORKER_AMQP_URL=CLOSED_PORT_URL, DMS_WORKER_HTTP_PORT="0", DMS_WORKER_LOG_JSON="true")
        process = await start_cli("run", env=env, cwd=tmp_path)
        assert process.stderr is not None
        seen = b""
        while b'"attempt": 3' not in seen:  # tries about 1 s and 2 s apart
            seen += await asyncio.wait_for(process.stderr.readline(), 15)
        process.send_signal(signal.SIGTERM)  # while it waits 4 s for the next try
        _, rest = await asyncio.wait_for(process.communicate(), 10)
        err = seen + rest
        assert process.returncode == 0 and "Traceback" not in err.decode()
        lines = [json.loads(line) for line in err.decode().splitlines()]  # JSON only, library lines included
        tries = [line for line in lines if line["event"] == "broker_unreachable"]
        assert [t["attempt"] for t in tries] == [1, 2, 3]
        # 1, 2 and 4 s, each jittered to between half and all of it (worker.backoff)
        waits = [t["retry_in_s"] for t in tries]
        assert all(n / 2 <= wait <= n for wait, n in zip(waits, [1.0, 2.0, 4.0], strict=True)), waits
        # The connection module's own warning names the address; said once, its identical repeats are held back.
        # No destination is configured here: that is said once too (TestConfigurationMistakes).
        others = [line["event"] for line in lines if line.get("level") in {"warning", "error"} and line not in tries]
        assert others in (["no_dms_destination"], ["no_dms_destination", "broker_connect_failed"])


SPELLING_HINT = "check the spelling; the README's Configuration table lists the settings"
NO_DESTINATION_HINT = (
    "uploads fail with unknown_tenant until one is set: DMS_WORKER_DESTINATION, DMS_WORKER_TENANT_DESTINATIONS, "
    "or a DMS (sdm) or Destination service binding in VCAP_SERVICES / SERVICE_BINDING_ROOT"
)


async def run_until_the_second_try(env: dict[str, str], cwd: Path) -> list[dict[str, Any]]:
    """``run`` against a closed port until its second try at the broker, then SIGTERM: its log lines."""
    process = await start_cli("run", env=env, cwd=cwd)
    assert process.stderr is not None
    seen = b""
    while seen.count(b'"event": "broker_unreachable"') < 2:  # tries 1 s apart
        line = await asyncio.wait_for(process.stderr.readline(), 15)
        assert line, seen.decode()
        seen += line
    process.send_signal(signal.SIGTERM)  # while it waits 2 s for the third try
    _, rest = await asyncio.wait_for(process.communicate(), 10)
    err = (seen + rest).decode()
    assert process.returncode == 0 and "Traceback" not in err, err
    return [json.loads(line) for line in err.splitlines()]  # JSON only, library lines included


class TestConfigurationMistakes:
    """Issue 21, item 4: a mistake that does not stop the command is said in one line, once, and it goes on."""

    async def test_a_run_says_each_configuration_gap_once_while_it_waits_for_the_broker(self, tmp_path: Path) -> None:
        env = environment(
            DMS_WORKER_AMQP_URL=CLOSED_PORT_URL,
            DMS_WORKER_HTTP_PORT="0",
            DMS_WORKER_LOG_JSON="true",
            DMS_WORKER_SHARD_CONT="3",
        )
        lines = await run_until_the_second_try(env, tmp_path)
        events = [line["event"] for line in lines]
        assert events.count("broker_unreachable") == 2
        (unknown,) = [line for line in lines if line["event"] == "unknown_settings"]
        assert (unknown["level"], unknown["names"], unknown["hint"]) == (
            "warning",
            ["DMS_WORKER_SHARD_CONT"],
            SPELLING_HINT,
        )
        (bindings,) = [line for line in lines if line["event"] == "service_bindings"]  # not once per try
        assert (bindings["dms"], bindings["destination_service"]) == (False, False)
        (missing,) = [line for line in lines if line["event"] == "no_dms_destination"]
        assert (missing["level"], missing["hint"]) == ("warning", NO_DESTINATION_HINT)
        assert events.index("no_dms_destination") < events.index("broker_unreachable")  # before the wait

    async def test_a_run_with_a_destination_and_known_settings_says_neither(self, tmp_path: Path) -> None:
        env = environment(
            DMS_WORKER_AMQP_URL=CLOSED_PORT_URL,
            DMS_WORKER_HTTP_PORT="0",
            DMS_WORKER_LOG_JSON="true",
            DMS_WORKER_DESTINATION__URL="http://127.0.0.1:1/",  # nested variables name a setting too
            DMS_WORKER_DESTINATION__CLIENT_ID="client",
            DMS_WORKER_DESTINATION__CLIENT_SECRET="secret",
            DMS_WORKER_DESTINATION__TOKEN_URL="http://127.0.0.1:1/oauth/token",
        )
        events = [line["event"] for line in await run_until_the_second_try(env, tmp_path)]
        assert "unknown_settings" not in events and "no_dms_destination" not in events
        assert events.count("service_bindings") == 1

    @pytest.mark.parametrize(
        "args",
        [
            ["publish", "a.txt", "--tenant", TENANT],
            ["delete", "--tenant", TENANT, "--document", TENANT],
            ["results"],
            ["dlq", "list"],
            ["topology", "delete", "--yes"],
        ],
        ids=lambda args: " ".join(args[:2]),
    )
    async def test_a_one_shot_command_warns_in_one_line_and_goes_on(self, tmp_path: Path, args: list[str]) -> None:
        (tmp_path / "a.txt").write_text("hello")
        env = environment(DMS_WORKER_AMQP_URL=CLOSED_PORT_URL, DMS_WORKER_SHARD_CONT="3", DMS_WORKER_FOO="1")
        outcome = await cli(*args, env=env, cwd=tmp_path)
        warning, error = outcome.err.splitlines()  # it went on, to the broker, which is not there
        assert warning == (
            "warning: unknown settings ignored: DMS_WORKER_FOO, DMS_WORKER_SHARD_CONT (check the spelling; the "
            "README's Configuration table lists the settings)"
        )
        assert outcome.code == 1 and error.startswith("error: cannot reach the broker"), outcome.err

    async def test_a_command_that_works_keeps_its_exit_code(self, stack: Stack, tmp_path: Path) -> None:
        (tmp_path / "a.txt").write_text("hello")
        env = stack_env(stack) | {"DMS_WORKER_SHARD_CONT": "3"}
        outcome = await cli("publish", "a.txt", "--tenant", str(uuid.uuid4()), "--wait", env=env, cwd=tmp_path)
        assert outcome.code == 0, outcome.err
        assert outcome.err.splitlines() == [
            "warning: unknown settings ignored: DMS_WORKER_SHARD_CONT (check the spelling; the README's "
            "Configuration table lists the settings)"
        ]
        assert outcome.rows()[1]["type"] == "dms.upload.succeeded"


def executable_named_pdf(path: Path) -> Path:
    path.write_bytes(
        b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + b"\x00" * 200 + b"This program cannot be run"
    )
    return path


class TestPublishWait:
    """``publish --wait`` prints the result event; the exit code tells the outcome."""

    async def test_a_success_exits_0_with_the_event(self, stack: Stack, tmp_path: Path) -> None:
        (tmp_path / "notes.txt").write_text("meeting notes")
        tenant = str(uuid.uuid4())
        outcome = await cli("publish", "notes.txt", "--tenant", tenant, "--wait", env=stack_env(stack), cwd=tmp_path)
        assert outcome.code == 0, outcome.err
        published, event = outcome.rows()
        assert event["type"] == "dms.upload.succeeded" and event["data"]["command_id"] == published["command_id"]
        assert event["data"]["version_label"] == "1.0" and event["data"]["tenant_id"] == tenant

    async def test_a_refused_file_exits_1_with_the_failed_event(self, stack: Stack, tmp_path: Path) -> None:
        executable_named_pdf(tmp_path / "invoice.pdf")
        args = ("publish", "invoice.pdf", "--tenant", str(uuid.uuid4()), "--wait", "--timeout", "30")
        outcome = await cli(*args, env=stack_env(stack), cwd=tmp_path)
        assert outcome.code == 1, outcome.err
        published, event = outcome.rows()
        assert event["type"] == "dms.upload.failed" and event["data"]["command_id"] == published["command_id"]
        assert event["data"]["error"]["code"] == "unsupported_file_type"
        outcome.assert_one_line_mistake(1, "dms.upload.failed", "unsupported_file_type")

    async def test_delete_waits_too(self, stack: Stack, tmp_path: Path) -> None:
        args = ("delete", "--tenant", str(uuid.uuid4()), "--document", str(uuid.uuid4()), "--wait")
        outcome = await cli(*args, env=stack_env(stack), cwd=tmp_path)
        assert outcome.code == 0, outcome.err
        assert outcome.rows()[1]["type"] == "dms.delete.succeeded"

    async def test_a_cluster_whose_first_node_is_down_is_reached_through_the_next(
        self, stack: Stack, tmp_path: Path
    ) -> None:
        (tmp_path / "a.txt").write_text("hello")
        nodes = json.dumps([CLOSED_PORT_URL, stack.settings.amqp_url.get_secret_value()])
        env = stack_env(stack) | {"DMS_WORKER_AMQP_URLS": nodes}
        outcome = await cli("publish", "a.txt", "--tenant", str(uuid.uuid4()), "--wait", env=env, cwd=tmp_path)
        assert outcome.code == 0, outcome.err
        assert outcome.rows()[1]["type"] == "dms.upload.succeeded"
        outcome = await cli("dlq", "list", env=env, cwd=tmp_path)
        assert outcome.code == 0 and outcome.rows() == [], outcome.err

    async def test_it_says_each_retry_while_it_waits(self, make_stack: StackFactory, tmp_path: Path) -> None:
        stack = await make_stack(retry_delays_ms=[1000, 1500])
        tenant = str(uuid.uuid4())
        (tmp_path / "a.txt").write_text("hello")
        await cli("publish", "a.txt", "--tenant", tenant, "--wait", env=stack_env(stack), cwd=tmp_path)  # repository
        fault = {"kind": "status", "status": 503, "times": 2, "path_prefix": "/browser", "action": "createDocument"}
        await stack.set_faults(scripted=[fault])
        outcome = await cli("publish", "a.txt", "--tenant", tenant, "--wait", env=stack_env(stack), cwd=tmp_path)
        assert outcome.code == 0, outcome.err
        said = "(dms_unavailable: DMS createDocument answered 503 runtime: Emulated failure 503)"
        notices = outcome.err.splitlines()
        pattern = r"retrying: attempt (\d) failed (\(.+\)); next attempt in ([\d.]+) s"
        said_each = [re.fullmatch(pattern, notice) for notice in notices]
        assert all(said_each) and len(said_each) == 2, notices
        assert [(int(m[1]), m[2]) for m in said_each if m] == [(1, said), (2, said)]
        # 1 and 1.5 s, each jittered to between half and all of it (worker.backoff)
        waits = [float(m[3]) for m in said_each if m]
        assert 0.5 <= waits[0] <= 1 and 0.75 <= waits[1] <= 1.5, notices
        assert outcome.rows()[1]["type"] == "dms.upload.succeeded" and outcome.rows()[1]["data"]["attempts"] == 3

    async def test_giving_up_while_the_worker_retries_says_so(self, make_stack: StackFactory, tmp_path: Path) -> None:
        stack = await make_stack(retry_delays_ms=[30_000])
        await stack.set_faults(error_rate=1.0, error_statuses=[503])
        (tmp_path / "a.txt").write_text("hello")
        args = ("publish", "a.txt", "--tenant", str(uuid.uuid4()), "--wait", "--timeout", "3")
        outcome = await cli(*args, env=stack_env(stack), cwd=tmp_path)
        assert outcome.code == 3, outcome.err
        notice, error = outcome.err.splitlines()
        said = re.fullmatch(r"retrying: attempt 1 failed \(\w+: .+\); next attempt in ([\d.]+) s", notice)
        assert said and 15 <= float(said[1]) <= 30, notice  # 30 s, jittered to between half and all of it
        assert error.startswith("error: no result for command ") and f"the worker is retrying it ({notice})" in error

    async def test_no_result_in_time_exits_3(self, stack: Stack, tmp_path: Path) -> None:
        await stack.set_faults(latency_ms=3000)  # DMS answers after the CLI gave up
        (tmp_path / "a.txt").write_text("hello")
        args = ("publish", "a.txt", "--tenant", str(uuid.uuid4()), "--wait", "--timeout", "1")
        outcome = await cli(*args, env=stack_env(stack), cwd=tmp_path)
        outcome.assert_one_line_mistake(3, "no result", "--timeout")
        await stack.worker.stop(grace_s=0)  # the upload still waits for DMS: give it back rather than wait it out


async def test_results_follows_events_with_filters(stack: Stack, tmp_path: Path) -> None:
    tenant, other = uuid.uuid4(), uuid.uuid4()
    args = ("results", "--tenant", str(tenant), "--type", "upload", "--count", "2", "--timeout", "30")
    process = await start_cli(*args, env=stack_env(stack), cwd=tmp_path)
    assert process.stderr is not None
    assert "following" in (await asyncio.wait_for(process.stderr.readline(), 20)).decode()
    mine = [upload_command(tenant, uuid.uuid4(), f"{i}.txt", "text/plain", b"x") for i in range(2)]
    for command in [upload_command(other, uuid.uuid4(), "o.txt", "text/plain", b"x"), *mine]:
        await stack.send(command)
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    events = [json.loads(line) for line in out.decode().splitlines()]
    assert sorted(e["data"]["command_id"] for e in events) == sorted(c.id for c in mine)
    assert {e["type"] for e in events} == {"dms.upload.succeeded"}


class TestDeadLetterTools:
    """Progress while they work, rows as they go, a guarded purge, dry runs that say what they would do."""

    async def dead_letter(self, make_stack: StackFactory, count: int) -> tuple[Stack, uuid.UUID]:
        stack = await make_stack(destination=False)  # every tenant is unknown: straight to the DLQ
        tenant = uuid.uuid4()
        for i in range(count):
            await stack.send(upload_command(tenant, uuid.uuid4(), f"{i}.txt", "text/plain", b"y" * 600))
        events = await stack.next_events(count)
        assert all(e["data"]["dead_lettered"] for e in events)
        return stack, tenant

    async def test_purge_needs_a_filter_or_all_and_dry_runs_list_what_they_would_touch(
        self, make_stack: StackFactory, tmp_path: Path
    ) -> None:
        stack, tenant = await self.dead_letter(make_stack, 3)
        env = stack_env(stack)
        outcome = await cli("dlq", "purge", env=env, cwd=tmp_path)
        outcome.assert_one_line_mistake(2, "--all")
        outcome = await cli("dlq", "purge", "--all", "--dry-run", env=env, cwd=tmp_path)
        assert outcome.code == 0 and len(outcome.rows()) == 3
        assert {row["tenant_id"] for row in outcome.rows()} == {str(tenant)}
        outcome = await cli("dlq", "replay", "--dry-run", "--limit", "2", env=env, cwd=tmp_path)
        assert outcome.code == 0 and len(outcome.rows()) == 2
        assert len(await stack.dead_letters()) == 3
        outcome = await cli("dlq", "purge", "--tenant", str(tenant), env=env, cwd=tmp_path)
        assert outcome.code == 0 and len(outcome.rows()) == 3 and '"purged": 3' in outcome.err
        assert await stack.dead_letters() == []

    async def test_show_prints_headers_and_a_shortened_body(self, make_stack: StackFactory, tmp_path: Path) -> None:
        stack, _ = await self.dead_letter(make_stack, 1)
        outcome = await cli("dlq", "show", env=stack_env(stack), cwd=tmp_path)
        (row,) = outcome.rows()
        assert row["headers"]["x-error-code"] == "unknown_tenant" and row["error_message"]
        content = row["body"]["data"]["content_base64"]
        assert content.endswith("(800 characters)") and len(content) < 300

    async def test_replay_prints_each_row_as_it_goes_and_json_progress_when_not_a_terminal(
        self, make_stack: StackFactory, tmp_path: Path
    ) -> None:
        stack, _ = await self.dead_letter(make_stack, 6)
        process = await start_cli("dlq", "replay", "--rate", "4", env=stack_env(stack), cwd=tmp_path)
        assert process.stdout is not None and process.stderr is not None
        first_row = await asyncio.wait_for(process.stdout.readline(), 10)  # long before the 1.5 s run ends
        assert json.loads(first_row)["error_code"] == "unknown_tenant"
        assert process.returncode is None
        out, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0 and len(out.decode().splitlines()) == 5
        progress = [json.loads(line) for line in err.decode().splitlines()]
        assert progress[0] == {"stage": "replaying", "done": 0, "total": 6}  # one pass: each message read once
        assert progress[-2] == {"stage": "replaying", "done": 6, "total": 6} and progress[-1] == {"replayed": 6}

    async def test_a_terminal_gets_a_progress_bar(self, make_stack: StackFactory, tmp_path: Path) -> None:
        stack, _ = await self.dead_letter(make_stack, 2)
        controller, terminal = pty.openpty()
        env = {**stack_env(stack), "TERM": "xterm-256color"}
        process = await start_cli("dlq", "list", env=env, cwd=tmp_path, stderr=terminal)
        os.close(terminal)
        out, _ = await asyncio.wait_for(process.communicate(), 30)
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
        os.close(controller)
        assert process.returncode == 0 and len(out.decode().splitlines()) == 2
        assert b"scanning" in shown and "━".encode() in shown and b"2/2" in shown
