"""The check service's web application (FastAPI).

Endpoints (the OpenAPI schema is at ``/openapi.json``):

* ``POST /tokens``: a new reader token (no personal data);
* ``POST /cases``: fresh cases of one graded part, drawn from the checks'
  own generators with a seed the service keeps, with a case id and an expiry;
* ``POST /answers``: the reader's outputs on those cases, as data; the
  verdict and the check's message. One attempt per case: sending the same
  case again returns the recorded verdict;
* ``GET /progress/{token}``: a page with the reader's attempts and passed parts;
* ``GET /healthz``.
"""
import datetime
import html
import json
import os
import secrets

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from grader import checks
from bnref.checking import codec
from service import db
from service.limits import SlidingWindow

TOKEN = r"^[0-9a-f]{32}$"
NOT_ONLINE = {("a3_triton_batchnorm", "bn_bandwidth")}  # speed is not checked remotely


class Settings:
    """From the environment (``CHECK_SERVICE_*``), with defaults for one machine."""

    def __init__(self, **overrides):
        env = os.environ
        self.database_url = overrides.get("database_url") or env.get("CHECK_SERVICE_DATABASE_URL") or db.default_url()
        self.max_body_bytes = int(overrides.get("max_body_bytes") or env.get("CHECK_SERVICE_MAX_BODY_BYTES", 4 << 20))
        self.case_seconds = int(overrides.get("case_seconds") or env.get("CHECK_SERVICE_CASE_SECONDS", 3600))
        self.per_token = int(overrides.get("per_token") or env.get("CHECK_SERVICE_RATE_PER_TOKEN", 120))
        self.per_address = int(overrides.get("per_address") or env.get("CHECK_SERVICE_RATE_PER_ADDRESS", 600))
        self.migrate = overrides.get("migrate", env.get("CHECK_SERVICE_MIGRATE", "1") != "0")


class CasesIn(BaseModel):
    token: str = Field(pattern=TOKEN, description="a token from POST /tokens")
    assignment: str = Field(max_length=64)
    part: str = Field(max_length=64)


class CasesOut(BaseModel):
    case_id: str
    expires_at: str
    request: dict


class AnswersIn(BaseModel):
    token: str = Field(pattern=TOKEN)
    case_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    results: list = Field(description="the driver's encoded results, one per case of the request")


class VerdictOut(BaseModel):
    case_id: str
    assignment: str
    part: str
    passed: bool
    message: str | None
    attempts: int


def _error(status, detail, **headers):
    return JSONResponse({"detail": detail}, status_code=status, headers=headers or None)


class Limits:
    """Pure ASGI middleware: requests per address, and the size of a POST body.

    A POST must say its length (411 otherwise) and stay within
    ``max_body_bytes`` (413), checked before the body is read.
    """

    def __init__(self, app, settings, address_limit):
        self.app, self.settings, self.address_limit = app, settings, address_limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        address = (scope.get("client") or ("?", 0))[0]
        response = None
        if not self.address_limit.allow(address):
            response = _error(429, "too many requests from this address; wait a minute",
                              **{"Retry-After": str(self.address_limit.retry_after(address))})
        elif scope["method"] == "POST":
            headers = dict(scope.get("headers") or [])
            length = headers.get(b"content-length", b"").decode("latin-1")
            limit = self.settings.max_body_bytes
            if not length:
                response = _error(411, "a POST needs a Content-Length header")
            elif not length.isdigit() or int(length) > limit:
                response = _error(413, f"the request body is {length} bytes; the limit is {limit}")
        if response is not None:
            return await response(scope, receive, send)
        return await self.app(scope, receive, send)


def create_app(**overrides):
    settings = Settings(**overrides)
    if settings.migrate:
        db.migrate(settings.database_url)
    Session = db.sessionmaker(bind=db.engine_for(settings.database_url), expire_on_commit=False)
    parts = {key for key in checks.load() if key not in NOT_ONLINE}
    token_limit, address_limit = SlidingWindow(settings.per_token), SlidingWindow(settings.per_address)
    app = FastAPI(title="Batch normalization course: check service", version="1")

    app.add_middleware(Limits, settings=settings, address_limit=address_limit)
    known_tokens = set()  # tokens are never deleted: one lookup per token and worker

    def reader_allowed(token):
        if not token_limit.allow(token):
            raise HTTPException(429, "too many requests for this token; wait a minute",
                                headers={"Retry-After": str(token_limit.retry_after(token))})
        if token in known_tokens:
            return
        with Session() as session:
            if session.get(db.Reader, token) is None:
                raise HTTPException(404, "unknown token: get one from POST /tokens")
        known_tokens.add(token)

    @app.get("/healthz")
    def healthz():
        return {"ok": True, "parts": len(parts)}

    @app.post("/tokens", status_code=201)
    def new_token():
        token = secrets.token_hex(16)
        with Session() as session, session.begin():
            session.add(db.Reader(token=token))
        return {"token": token}

    @app.post("/cases", response_model=CasesOut, status_code=201)
    def new_cases(body: CasesIn):
        if (body.assignment, body.part) not in parts:
            raise HTTPException(404, f"no online check for part {body.part!r} of {body.assignment!r}")
        reader_allowed(body.token)
        seed = secrets.randbits(48)
        text, _, _ = checks.prepare(body.assignment, body.part, seed)
        case_id = secrets.token_hex(16)
        expires = db.now() + datetime.timedelta(seconds=settings.case_seconds)
        with Session() as session, session.begin():
            session.add(db.Case(id=case_id, token=body.token, assignment=body.assignment, part=body.part,
                                seed=str(seed), expires_at=expires))
        request = json.loads(text)
        return {"case_id": case_id, "expires_at": expires.isoformat() + "Z", "request": request}

    def recorded_verdict(session, case):
        attempt = session.execute(select(db.Attempt).where(db.Attempt.case_id == case.id)).scalar_one_or_none()
        if attempt is None:
            return None
        count = session.scalar(select(func.count()).select_from(db.Attempt).where(
            db.Attempt.token == case.token, db.Attempt.assignment == case.assignment,
            db.Attempt.part == case.part))
        return {"case_id": case.id, "assignment": case.assignment, "part": case.part,
                "passed": attempt.passed, "message": attempt.message, "attempts": count}

    @app.post("/answers", response_model=VerdictOut)
    def answers(body: AnswersIn):
        reader_allowed(body.token)
        with Session() as session:
            case = session.get(db.Case, body.case_id)
            if case is None or case.token != body.token:
                raise HTTPException(404, "unknown case id for this token")
            verdict = recorded_verdict(session, case)
        if verdict is not None:
            return verdict  # a retry: the recorded verdict, no second attempt
        if case.expires_at < db.now():
            raise HTTPException(410, "these cases have expired: ask for new ones")
        try:
            results = codec.decode(body.results, max_bytes=settings.max_body_bytes)
        except codec.DecodeError as err:
            raise HTTPException(422, f"malformed answer: {err}") from None
        _, verifies = checks.draw(case.assignment, case.part, int(case.seed))
        message = checks.judge(verifies, results)
        with Session() as session:
            try:
                with session.begin():
                    session.add(db.Attempt(case_id=case.id, token=case.token, assignment=case.assignment,
                                           part=case.part, passed=message is None, message=message))
            except IntegrityError:
                session.rollback()  # the same case answered at the same moment by a retry: keep the first
            return recorded_verdict(session, case)

    @app.get("/progress/{token}", response_class=HTMLResponse)
    def progress(token: str):
        if not token_limit.allow(token):
            raise HTTPException(429, "too many requests for this token; wait a minute")
        with Session() as session:
            if len(token) != 32 or session.get(db.Reader, token) is None:
                raise HTTPException(404, "unknown token")
            rows = session.execute(
                select(db.Attempt.assignment, db.Attempt.part, func.count(), func.max(db.Attempt.passed.cast(db.Integer)))
                .where(db.Attempt.token == token).group_by(db.Attempt.assignment, db.Attempt.part)
                .order_by(db.Attempt.assignment, db.Attempt.part)).all()
        body = "".join(
            f"<tr><td>{html.escape(a)}</td><td>{html.escape(p)}</td><td>{n}</td>"
            f"<td class='{'passed' if ok else 'open'}'>{'passed' if ok else 'not yet'}</td></tr>"
            for a, p, n, ok in rows) or "<tr><td colspan='4'>No attempts yet.</td></tr>"
        passed = sum(1 for *_, ok in rows if ok)
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>Your progress</title></head><body>"
                f"<h1>Your progress</h1><p>{passed} of {len(parts)} parts passed.</p>"
                f"<table><thead><tr><th>assignment</th><th>part</th><th>attempts</th><th>status</th></tr></thead>"
                f"<tbody>{body}</tbody></table></body></html>")

    return app
