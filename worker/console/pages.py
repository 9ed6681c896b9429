"""The console's pages: server-rendered Jinja2 templates, with htmx refreshing the parts that change.

Every page works without JavaScript (forms post and redirect); htmx only polls fragments (job progress, the
index's state, the outcomes feed, the fleet) and loads a dead letter's full detail after the page. Nothing on
a page is a secret or file content: a dead letter's ``content_base64`` is replaced by its length, a
``content_url`` loses its query (signed URLs carry tokens there), secret-looking headers are hidden.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any

import jinja2
import structlog
from aiohttp import web

from worker.console.auth import SESSION_COOKIE, Gate, signed_in
from worker.console.feed import Fleet, OutcomeFilter, ResultFeed
from worker.console.forms import FILTER_FIELDS, BadInput, filter_query, selection_from, uuid_field
from worker.console.index import DeadLetterIndex
from worker.console.jobs import Jobs
from worker.console.shown import age, shown_event, shown_headers
from worker.intake.ownership import shard_ranges
from worker.results.dead_letters import DeadLetter, DeadLetterQueue, Selection
from worker.settings import ConsoleSettings

PAGE_SIZE = 50
FAILED_SIGN_IN_DELAY_S = 1.0

log = structlog.get_logger(__name__)

templates = jinja2.Environment(
    loader=jinja2.PackageLoader("worker.console", "templates"),
    autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


templates.filters["age"] = age


@dataclass
class Services:
    settings: ConsoleSettings
    gate: Gate
    index: DeadLetterIndex
    jobs: Jobs
    feed: ResultFeed
    fleet: Fleet
    queue: Any  # () -> DeadLetterQueue, for the detail view


def render(request: web.Request, template: str, status: int = 200, **values: Any) -> web.Response:
    session = request.get("session")
    page = templates.get_template(template).render(
        user=request.get("user"),
        csrf=session.csrf if session is not None else "",
        path=request.path,
        **values,
    )
    return web.Response(text=page, status=status, content_type="text/html")


def refuse(request: web.Request, status: int, reason: str) -> web.Response:
    if status == 401:
        return render(request, "signin.html", status=401, reason=reason)
    return render(request, "refused.html", status=status, reason=reason)


# --- handlers --------------------------------------------------------------------------------------


class Pages:
    def __init__(self, services: Services) -> None:
        self.s = services

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self.home),
            web.get("/signin", self.signin_form),
            web.post("/signin", self.signin),
            web.post("/signout", self.signout),
            web.get("/dead-letters", self.dead_letters),
            web.get("/dead-letters/status", self.index_status),
            web.post("/dead-letters/rescan", self.rescan),
            web.get("/dead-letters/purge", self.purge_form),
            web.post("/dead-letters/purge/ask", self.purge_form),
            web.post("/dead-letters/purge", self.purge),
            web.post("/dead-letters/replay", self.replay),
            web.get("/dead-letters/{message_id}", self.dead_letter),
            web.get("/dead-letters/{message_id}/full", self.dead_letter_full),
            web.get("/jobs", self.jobs),
            web.get("/jobs/{job_id}", self.job),
            web.get("/jobs/{job_id}/progress", self.job_progress),
            web.post("/jobs/{job_id}/cancel", self.cancel_job),
            web.get("/outcomes", self.outcomes),
            web.get("/outcomes/feed", self.outcomes_feed),
            web.get("/documents/{document_id}", self.document),
            web.get("/fleet", self.fleet),
            web.get("/fleet/live", self.fleet_live),
        ]

    async def home(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPSeeOther("/dead-letters")

    # sign in and out

    async def signin_form(self, request: web.Request) -> web.StreamResponse:
        if request.get("user") is None and self.s.gate.session(request.cookies.get(SESSION_COOKIE)) is not None:
            raise web.HTTPSeeOther("/dead-letters")
        return render(request, "signin.html", reason="")

    async def signin(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        token = form.get("token")
        user = self.s.gate.user_with_token(token) if isinstance(token, str) and token else None
        if user is None:
            log.warning("console_sign_in_refused", remote=request.remote)
            await asyncio.sleep(FAILED_SIGN_IN_DELAY_S)  # guessing tokens gets slow
            return render(request, "signin.html", status=401, reason="that token lets nobody in")
        log.info("console_signed_in", user=user.name, role=user.role, remote=request.remote)
        sid, _ = self.s.gate.open_session(user)
        response = web.HTTPSeeOther("/dead-letters")
        signed_in(response, request, sid)
        raise response

    async def signout(self, request: web.Request) -> web.StreamResponse:
        self.s.gate.close_session(request.cookies.get(SESSION_COOKIE))
        response = web.HTTPSeeOther("/signin")
        response.del_cookie(SESSION_COOKIE, path="/")
        raise response

    # dead letters

    def _bad(self, request: web.Request, problem: BadInput) -> web.Response:
        return render(request, "refused.html", status=400, reason=str(problem))

    async def dead_letters(self, request: web.Request) -> web.StreamResponse:
        try:
            selection = selection_from(request.query)
        except BadInput as problem:
            return self._bad(request, problem)
        page_text = request.query.get("page", "1")
        page = max(1, int(page_text)) if page_text.isdigit() else 1
        matching = self.s.index.select(selection)
        shown = matching[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
        return render(
            request,
            "dead_letters.html",
            index=self.s.index,
            groups=self.s.index.groups(),
            codes=self.s.index.error_codes(),
            params={name: request.query.get(name, "") for name in FILTER_FIELDS},
            query=filter_query(request.query),
            filtered=not selection.selects_everything(),
            matching=len(matching),
            letters=shown,
            page=page,
            pages=max(1, math.ceil(len(matching) / PAGE_SIZE)),
            page_query=lambda n: filter_query(request.query, page=n),
            group_query=lambda g: filter_query({}, error_code=g.error_code or "", tenant=g.tenant_id or ""),
            rate=self.s.settings.console_replay_rate,
            jobs=list(self.s.jobs.history)[:5],
        )

    async def index_status(self, request: web.Request) -> web.StreamResponse:
        return render(request, "index_status.html", index=self.s.index)

    async def rescan(self, request: web.Request) -> web.StreamResponse:
        self.s.index.request_rebuild()
        raise web.HTTPSeeOther("/dead-letters")

    async def replay(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        picked = [str(v) for v in form.getall("id", [])]
        if form.get("scope") == "picked" and not picked:
            return self._bad(request, BadInput("no dead letters picked: tick some, or replay the whole filter"))
        try:
            selection = selection_from(form, picked if form.get("scope") == "picked" else None)
            rate_text = str(form.get("rate", "") or "").strip()
            rate = float(rate_text) if rate_text else self.s.settings.console_replay_rate
            if not 0 < rate < math.inf:
                raise BadInput("the rate must be a positive number of commands per second")
        except ValueError as problem:
            return self._bad(request, BadInput(str(problem)))
        expected = len(self.s.index.select(selection))
        job = self.s.jobs.submit("replay", request["user"], selection, expected, rate)
        raise web.HTTPSeeOther(f"/jobs/{job.id}")

    async def purge_form(self, request: web.Request) -> web.StreamResponse:
        """Asks for the count: a link (GET, a filter) or the list's Purge button (POST: the picked ones too)."""
        params = await request.post() if request.method == "POST" else request.query
        picked = [str(v) for v in params.getall("id", [])] if params.get("scope") != "filter-purge" else []
        if params.get("scope") == "picked-purge" and not picked:
            return self._bad(request, BadInput("no dead letters picked: tick some, or purge the whole filter"))
        try:
            selection = selection_from(params, picked or None)
        except BadInput as problem:
            return self._bad(request, problem)
        return render(
            request,
            "purge.html",
            selection=selection.as_filter(),
            count=len(self.s.index.select(selection)),
            params={name: str(params.get(name, "")) for name in FILTER_FIELDS},
            picked=picked,
            problem="",
        )

    async def purge(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        picked = [str(v) for v in form.getall("id", [])]
        try:
            selection = selection_from(form, picked or None)
        except BadInput as problem:
            return self._bad(request, problem)
        count = len(self.s.index.select(selection))
        if str(form.get("confirm", "")).strip() != str(count) or count == 0:
            return render(
                request,
                "purge.html",
                status=400,
                selection=selection.as_filter(),
                count=count,
                params={name: str(form.get(name, "")) for name in FILTER_FIELDS},
                picked=picked,
                problem=f"type {count} to purge the {count} dead letters" if count else "nothing to purge",
            )
        job = self.s.jobs.submit("purge", request["user"], selection, count)
        raise web.HTTPSeeOther(f"/jobs/{job.id}")

    async def dead_letter(self, request: web.Request) -> web.StreamResponse:
        message_id = request.match_info["message_id"]
        letter = self.s.index.get(message_id)
        return render(request, "dead_letter.html", message_id=message_id, letter=letter)

    async def dead_letter_full(self, request: web.Request) -> web.StreamResponse:
        """Reads the DLQ up to the dead letter (a pass of the whole DLQ, see ``DeadLetterQueue``)."""
        message_id = request.match_info["message_id"]
        index = self.s.index
        if index.turn.locked():
            return render(request, "dead_letter_full.html", letter=None, busy=True, message_id=message_id)
        async with index.turn:
            dlq: DeadLetterQueue = self.s.queue()
            letter: DeadLetter | None = await dlq.find(message_id, self.s.settings.console_scan_limit)
        return render(
            request,
            "dead_letter_full.html",
            letter=letter,
            busy=False,
            message_id=message_id,
            headers=shown_headers(letter.headers if letter else None),
            event=shown_event(letter.body if letter else None),
        )

    # jobs

    def _job(self, request: web.Request) -> Any:
        job_id = request.match_info["job_id"]
        job = self.s.jobs.get(int(job_id)) if job_id.isdigit() else None
        if job is None:
            raise web.HTTPNotFound(text="no such job")
        return job

    async def jobs(self, request: web.Request) -> web.StreamResponse:
        return render(request, "jobs.html", jobs=list(self.s.jobs.history))

    async def job(self, request: web.Request) -> web.StreamResponse:
        return render(request, "job.html", job=self._job(request))

    async def job_progress(self, request: web.Request) -> web.StreamResponse:
        return render(request, "job_progress.html", job=self._job(request))

    async def cancel_job(self, request: web.Request) -> web.StreamResponse:
        job = self._job(request)
        self.s.jobs.cancel(job, request["user"])
        raise web.HTTPSeeOther(f"/jobs/{job.id}")

    # outcomes

    def _outcome_filter(self, request: web.Request) -> OutcomeFilter:
        q = request.query
        return OutcomeFilter(
            kind=q.get("kind") or None,
            outcome=q.get("outcome") or None,
            tenant_id=uuid_field(q.get("tenant", ""), "tenant"),
            document_id=uuid_field(q.get("document", ""), "document"),
            error_code=q.get("error_code") or None,
        )

    async def outcomes(self, request: web.Request) -> web.StreamResponse:
        try:
            wanted = self._outcome_filter(request)
        except BadInput as problem:
            return self._bad(request, problem)
        return render(
            request,
            "outcomes.html",
            events=self.s.feed.latest(wanted),
            since=self.s.feed.since,
            query=request.query_string,
            params={k: request.query.get(k, "") for k in ("kind", "outcome", "tenant", "document", "error_code")},
        )

    async def outcomes_feed(self, request: web.Request) -> web.StreamResponse:
        try:
            wanted = self._outcome_filter(request)
        except BadInput as problem:
            return self._bad(request, problem)
        return render(request, "outcomes_feed.html", events=self.s.feed.latest(wanted), query=request.query_string)

    async def document(self, request: web.Request) -> web.StreamResponse:
        try:
            document = uuid_field(request.match_info["document_id"], "document")
        except BadInput as problem:
            return self._bad(request, problem)
        history = list(reversed(self.s.feed.latest(OutcomeFilter(document_id=document), count=1000)))
        dead = self.s.index.select(Selection(document_id=document))
        return render(request, "document.html", document=str(document), history=history, dead=dead)

    # fleet

    def _fleet_values(self) -> dict[str, Any]:
        rates = self.s.feed.rates()
        peak = max([1.0, *(max(s, f) for _, s, f in rates)])
        width, height = 600, 120

        def points(column: int) -> str:
            step = width / max(1, len(rates) - 1)
            return " ".join(
                f"{i * step:.1f},{height - (rate[column] / peak) * height:.1f}" for i, rate in enumerate(rates)
            )

        return {
            "replicas": self.s.fleet.replicas(),
            "ranges": shard_ranges,
            "running": self.s.fleet.running_by_tenant(),
            "depths": self.s.fleet.queue_depths(),
            "dlq_depth": self.s.index.depth,
            "succeeded_points": points(1),
            "failed_points": points(2),
            "peak": peak,
            "now_rates": rates[-2] if len(rates) > 1 else (0, 0.0, 0.0),
            "chart": (width, height),
        }

    async def fleet(self, request: web.Request) -> web.StreamResponse:
        return render(request, "fleet.html", **self._fleet_values())

    async def fleet_live(self, request: web.Request) -> web.StreamResponse:
        return render(request, "fleet_live.html", **self._fleet_values())
