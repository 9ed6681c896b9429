"""The console's pure parts: who gets in, what a form selects, what a page may show, how the index groups
and follows events, how a job learns its replays' outcomes, and the rates behind the fleet chart."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from worker.console.auth import Gate, NoConsoleUsers, User, console_users, same_site
from worker.console.feed import BUCKET_S, Fleet, OutcomeFilter, ResultFeed
from worker.console.forms import BadInput, selection_from
from worker.console.index import KEPT_MESSAGE_LENGTH, DeadLetterIndex, letter_from_event
from worker.console.jobs import Job, Jobs
from worker.console.shown import age, shown_event, shown_headers
from worker.results.dead_letters import DeadLetter, Selection
from worker.settings import ConsoleSettings, ConsoleUser

TENANT = uuid.UUID("0b6c3f0e-2a7f-4a59-9d4e-5b8f6f0f2c11")
NOW = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)


def letter(message_id: str, code: str = "dms_unavailable", tenant: str = str(TENANT), minutes: int = 1) -> DeadLetter:
    return DeadLetter(
        message_id, "dms.upload", tenant, str(uuid.uuid4()), code, "DMS answered 503", 3, None,
        NOW - dt.timedelta(minutes=minutes), 0,
    )  # fmt: skip


def failed_event(command_id: str, dead_lettered: bool = True, code: str = "dms_unavailable") -> dict[str, Any]:
    return {
        "type": "dms.upload.failed",
        "time": NOW.isoformat(),
        "data": {
            "command_id": command_id,
            "command_type": "dms.upload",
            "tenant_id": str(TENANT),
            "document_id": str(uuid.uuid4()),
            "error": {"code": code, "message": "x" * 1000},
            "dead_lettered": dead_lettered,
            "attempts": 5,
        },
    }


class TestWhoGetsIn:
    """Tokens name users; sessions end; the user list must exist and never leaks a token."""

    def test_a_token_names_its_user_and_role(self) -> None:
        gate = Gate({"olga": ConsoleUser(role="operator", token=SecretStr("o" * 20))})
        assert gate.user_with_token("o" * 20) == User("olga", "operator")
        assert gate.user_with_token("o" * 19) is None and gate.user_with_token("") is None
        sid, session = gate.open_session(User("olga", "operator"))
        assert gate.session(sid) is session and len(session.csrf) > 30
        gate.close_session(sid)
        assert gate.session(sid) is None and gate.session(None) is None

    def test_users_come_from_settings_and_a_mounted_file(self, tmp_path: Path) -> None:
        path = tmp_path / "users.json"
        path.write_text(json.dumps({"victor": {"role": "viewer", "token": "v" * 16}}))
        settings = ConsoleSettings(
            console_users={"olga": {"role": "operator", "token": "o" * 16}},
            console_users_file=path,
        )
        assert {name: user.role for name, user in console_users(settings).items()} == {
            "olga": "operator",
            "victor": "viewer",
        }

    def test_no_users_or_an_unreadable_file_is_one_clear_error_without_the_file_content(self, tmp_path: Path) -> None:
        with pytest.raises(NoConsoleUsers, match="CONSOLE_USERS"):
            console_users(ConsoleSettings())
        path = tmp_path / "users.json"
        path.write_text('{"olga": {"role": "admin", "token": "secret-token-value-1234"}}')
        with pytest.raises(NoConsoleUsers) as raised:
            console_users(ConsoleSettings(console_users_file=path))
        assert "secret-token-value" not in str(raised.value) and "ValidationError" in str(raised.value)

    def test_short_tokens_are_refused(self) -> None:
        with pytest.raises(ValueError, match="16"):
            ConsoleUser(role="viewer", token=SecretStr("short"))

    @pytest.mark.parametrize(
        ("headers", "same"),
        [
            ({}, True),
            ({"Origin": "http://console:8090", "Sec-Fetch-Site": "same-origin"}, True),
            ({"Origin": "http://evil:8090"}, False),
            ({"Origin": "null"}, False),
            ({"Sec-Fetch-Site": "same-site"}, False),
            ({"Sec-Fetch-Site": "cross-site"}, False),
        ],
    )
    def test_same_site(self, headers: dict[str, str], same: bool) -> None:
        class Request:
            scheme, host = "http", "console:8090"

        request: Any = Request()
        request.headers = headers
        assert same_site(request) is same


class TestForms:
    """The filter form's fields become a Selection; a bad field is named."""

    def test_every_field(self) -> None:
        selection = selection_from(
            {
                "error_code": "dms_unavailable",
                "tenant": f" {TENANT} ",
                "type": "dms.upload",
                "newer_than": "15m",
                "older_than": "90",
                "text": "503",
            },
            ["a", "b"],
        )
        assert selection == Selection(
            tenant_id=TENANT,
            error_code="dms_unavailable",
            older_than_s=90,
            newer_than_s=900,
            command_type="dms.upload",
            text="503",
            message_ids=frozenset({"a", "b"}),
        )
        assert selection_from({}).selects_everything()

    @pytest.mark.parametrize(
        ("field", "value", "named"),
        [("tenant", "nope", "tenant"), ("type", "dms.copy", "type"), ("older_than", "2 weeks", "older than")],
    )
    def test_a_bad_field_is_named(self, field: str, value: str, named: str) -> None:
        with pytest.raises(BadInput, match=named):
            selection_from({field: value})

    def test_ages(self) -> None:
        assert [age(NOW - dt.timedelta(seconds=s), NOW) for s in (3, 300, 7200, 200_000)] == [
            "3 s",
            "5 min",
            "2 h",
            "2 d",
        ]
        assert age(None) == "-"


class TestWhatAPageShows:
    """No file content, no signed URL query, no secret-looking header."""

    def test_content_is_replaced_by_its_length_and_a_url_loses_its_query(self) -> None:
        body = {"data": {"content_base64": "QUJD... (800 characters)", "file_name": "a.txt"}, "id": "1"}
        assert shown_event(body)["data"] == {
            "content_base64": "(content not shown: 800 characters of base64)",
            "file_name": "a.txt",
        }
        by_url = shown_event({"data": {"content_url": "https://blobs.example/a.pdf?sig=SECRET#x"}})
        assert by_url["data"]["content_url"] == "https://blobs.example/a.pdf (query not shown)"
        assert "SECRET" not in json.dumps(by_url)
        assert shown_event("not an object") == "not an object"

    def test_secret_looking_headers_are_hidden(self) -> None:
        shown = shown_headers({"x-error-code": "dms_unavailable", "Authorization": "Bearer t", "x-api-token": "t"})
        assert shown == {
            "x-error-code": "dms_unavailable",
            "Authorization": "(not shown)",
            "x-api-token": "(not shown)",
        }


class TestIndex:
    """Groups and filters come from memory; events add dead letters, jobs remove them one by one."""

    def index(self, *letters: DeadLetter) -> DeadLetterIndex:
        def no_broker(state: object) -> Any:
            raise AssertionError("the broker is not asked")

        index = DeadLetterIndex(no_broker, scan_limit=100)
        for one in letters:
            index.add(one)
        return index

    def test_groups_by_error_code_and_tenant_largest_first(self) -> None:
        other = str(uuid.uuid4())
        index = self.index(
            letter("a", minutes=1), letter("b", minutes=9), letter("c", "unknown_tenant", other), letter("d", minutes=5)
        )
        (first, second) = index.groups()
        assert (first.error_code, first.tenant_id, first.count) == ("dms_unavailable", str(TENANT), 3)
        assert first.oldest == NOW - dt.timedelta(minutes=9) and first.newest == NOW - dt.timedelta(minutes=1)
        assert (second.error_code, second.count) == ("unknown_tenant", 1)
        assert [d.message_id for d in index.select(Selection(error_code="unknown_tenant"))] == ["c"]
        assert index.error_codes() == ["dms_unavailable", "unknown_tenant"]

    def test_a_dead_lettered_event_adds_one_and_a_job_removes_it_by_id(self) -> None:
        index = self.index(letter("a"))
        added = letter_from_event(failed_event("b"))
        assert added is not None and letter_from_event(failed_event("c", dead_lettered=False)) is None
        index.add(added)
        kept = index.get("b")
        assert kept is not None and kept.error_message is not None and len(kept.error_message) == KEPT_MESSAGE_LENGTH
        assert (kept.tenant_id, kept.error_code, kept.attempts, kept.last_death) == (
            str(TENANT),
            "dms_unavailable",
            5,
            NOW,
        )
        index.add(letter("a"))  # dead-lettered again while the first copy is still there
        assert len(index) == 3
        index.remove(letter("a"))
        index.remove(letter("a"))
        assert [d.message_id for d in index.select(Selection())] == ["b"]

    def test_stale_when_the_depth_disagrees(self) -> None:
        index = self.index(letter("a"))
        index.depth = 1
        assert not index.stale
        index.depth = 2
        assert index.stale


class TestJobOutcomes:
    """A replay job counts the outcomes of the commands it replayed, and names those that failed again."""

    def test_outcomes(self) -> None:
        jobs = Jobs(lambda progress: None, DeadLetterIndex(lambda s: None, 10), 10)  # type: ignore[arg-type,return-value]
        job = Job(1, "replay", User("olga", "operator"), Selection(), expected=3)
        job.outcomes = {"a": "", "b": "", "c": ""}
        jobs.history.appendleft(job)
        jobs.on_event({"type": "dms.upload.succeeded", "data": {"command_id": "a"}})
        jobs.on_event({"type": "dms.upload.retrying", "data": {"command_id": "b"}})
        jobs.on_event(failed_event("b", code="unknown_tenant"))
        jobs.on_event({"type": "dms.upload.succeeded", "data": {"command_id": "elsewhere"}})
        assert (job.succeeded, job.failed_again, job.awaiting_outcome) == (1, {"b": "unknown_tenant"}, 1)


class TestFeedAndFleet:
    """The outcomes filter, the per-second rates of the chart, and replicas from heartbeats."""

    def test_filter_and_rates(self) -> None:
        feed = ResultFeed(kept=100)
        heard: list[str] = []
        feed.listen(lambda event: heard.append(event["type"]))
        now = 1_000_000.0
        for _ in range(20):
            feed.take({"type": "dms.upload.succeeded", "data": {"tenant_id": str(TENANT)}}, now=now)
        feed.take(failed_event("x"), now=now)
        assert len(feed.latest(OutcomeFilter(outcome="failed"))) == 1
        assert len(feed.latest(OutcomeFilter(kind="upload", tenant_id=TENANT))) == 21
        assert feed.latest(OutcomeFilter(error_code="rate_limited")) == []
        feed.take({"type": "dms.delete.succeeded", "data": {}}, now=now)  # neither an upload nor a failure
        assert feed.rates(now=now)[-1][1:] == (20 / BUCKET_S, 1 / BUCKET_S) and len(heard) == 22

    def test_replicas_from_heartbeats(self) -> None:
        fleet = Fleet(heartbeat_s=10)
        beat = {"member": "r1", "holds": [0, 1], "backlog": {"0": 5}, "running": {str(TENANT): 3}, "leaving": False}
        fleet.hear(json.dumps(beat).encode())
        fleet.hear(b"not json")
        (replica,) = fleet.replicas()
        assert (replica.holds, replica.backlog, fleet.running_by_tenant()) == ([0, 1], {0: 5}, {str(TENANT): 3})
        fleet.hear(json.dumps({**beat, "leaving": True}).encode())
        assert fleet.replicas() == []
