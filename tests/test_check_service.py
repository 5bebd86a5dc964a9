"""The readers' check service (issue #17): nothing a reader sends is ever run,
limits, restarts that lose nothing, and a notebook that checks a part through
a running service. That its verdicts are nbgrader's, part by part, for every
typical mistake, is tested with the pipeline (tests/test_nbgrader_pipeline.py)."""
import sys
import threading

import pytest

from _service import app_client, notebook_namespace
from bnref.checking import codec, driver
from grader import checks
from test_nbgrader_pipeline import A1, A2, A3

# Online, the reader's own machine runs the functions: the references are there,
# so a delegation is not caught (grading catches it: the kernel profiles).
DELEGATIONS = {(A1, "calls_reference"), (A1, "torch_in_numpy"), (A2, "calls_reference"),
               (A3, "calls_batch_norm"), (A3, "calls_bnref_triton")}
# Mistakes in the use of nbgrader itself, not in the code a check calls.
MECHANICS = {"loops_forever", "edits_test_cell", "deletes_test_cell", "duplicates_cells", "channel_bug"}


def online_parts(assignment):
    from service.app import NOT_ONLINE

    return sorted(part for a, part in checks.load() if a == assignment and (a, part) not in NOT_ONLINE)


def check_online(client, token, assignment, part, namespace):
    response = client.post("/cases", json={"token": token, "assignment": assignment, "part": part})
    assert response.status_code == 201, response.text
    case = response.json()
    results = driver.run(namespace, codec.decode(case["request"]))
    verdict = client.post("/answers", json={"token": token, "case_id": case["case_id"], "results": results})
    assert verdict.status_code == 200, verdict.text
    return verdict.json()


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    return app_client(tmp_path_factory.mktemp("service"), per_token=100_000, per_address=100_000)


def test_one_attempt_per_case_and_progress(client):
    namespace = notebook_namespace(A1, [])
    token = client.post("/tokens").json()["token"]
    case = client.post("/cases", json={"token": token, "assignment": A1, "part": "bn_backward"}).json()
    results = driver.run(namespace, codec.decode(case["request"]))
    body = {"token": token, "case_id": case["case_id"], "results": results}
    first, again = client.post("/answers", json=body).json(), client.post("/answers", json=body).json()
    assert first == again and first["attempts"] == 1 and first["passed"]
    other = client.post("/tokens").json()["token"]
    assert client.post("/answers", json=dict(body, token=other)).status_code == 404
    page = client.get(f"/progress/{token}").text
    assert "bn_backward" in page and "passed" in page and "1 of" in page
    assert client.get("/progress/" + "0" * 32).status_code == 404


def test_expired_cases_and_unknown_parts_are_refused(tmp_path):
    client = app_client(tmp_path, case_seconds=-1)
    token = client.post("/tokens").json()["token"]
    case = client.post("/cases", json={"token": token, "assignment": A1, "part": "bn_backward"}).json()
    response = client.post("/answers", json={"token": token, "case_id": case["case_id"], "results": []})
    assert response.status_code == 410 and "expired" in response.json()["detail"]
    response = client.post("/cases", json={"token": token, "assignment": A3, "part": "bn_bandwidth"})
    assert response.status_code == 404 and "no online check" in response.json()["detail"]
    response = client.post("/cases", json={"token": "f" * 32, "assignment": A1, "part": "bn_backward"})
    assert response.status_code == 404 and "unknown token" in response.json()["detail"]


def test_size_and_rate_limits(tmp_path):
    client = app_client(tmp_path, max_body_bytes=1000, per_token=3, per_address=1000)
    token = client.post("/tokens").json()["token"]
    big = client.post("/answers", content=b"x" * 2000, headers={"Content-Type": "application/json"})
    assert big.status_code == 413 and "limit is 1000" in big.json()["detail"]
    codes = [client.post("/cases", json={"token": token, "assignment": A1, "part": "bn_backward"}).status_code
             for _ in range(5)]
    assert codes[:3] == [201] * 3 and codes[3:] == [429, 429]
    crowded = app_client(tmp_path / "b", per_address=2)
    assert [crowded.get("/healthz").status_code for _ in range(3)] == [200, 200, 429]


class Watch:
    """Python's audit events raised while a request is handled: any code
    compiled or executed, any module imported, anything unpickled."""

    EVENTS = ("exec", "compile", "import", "pickle.find_class", "marshal.loads", "os.system", "subprocess.Popen")

    def __init__(self):
        self.on, self.seen = False, []
        sys.addaudithook(self.hook)

    def hook(self, event, args):
        if self.on and event in self.EVENTS and threading.current_thread() is not threading.main_thread():
            self.seen.append((event, str(args)[:120]))


def test_the_service_never_runs_what_a_reader_sends(client):
    """Code-bearing payloads, pickles, odd and oversized arrays: refused or judged as
    data; while they are handled, Python compiles, executes, imports and unpickles nothing."""
    import base64
    import pickle

    watch = Watch()
    token = client.post("/tokens").json()["token"]
    warm = client.post("/cases", json={"token": token, "assignment": A1, "part": "bn_backward"}).json()
    client.post("/answers", json={"token": token, "case_id": warm["case_id"], "results": [[]] * 3})

    class Boom:
        def __reduce__(self):
            return (eval, ("__import__('os').system('touch /tmp/pwned')",))

    pickled = base64.b64encode(pickle.dumps(Boom())).decode()
    payloads = [
        [{"$array": {"dtype": "object", "shape": [1], "b64": pickled}}] * 3,
        [{"$pickle": pickled}] * 3,
        [{"__reduce__": ["eval", "1+1"]}] * 3,
        ["__import__('os').system('touch /tmp/pwned')"] * 3,
        [{"$raised": {"type": "SystemExit", "message": "exec(open('x').read())"}}] * 3,
        [{"$array": {"dtype": "float64", "shape": [4096, 4096], "b64": "AAAA"}}] * 3,
        [{"$tuple": [{"$dict": [["returned", {"$object": "os.system"}]]}]}] * 3,
    ]
    statuses = []
    for results in payloads:
        case = client.post("/cases", json={"token": token, "assignment": A1, "part": "bn_backward"}).json()
        watch.on = True
        response = client.post("/answers", json={"token": token, "case_id": case["case_id"], "results": results})
        watch.on = False
        statuses.append(response.status_code)
        assert response.status_code in (200, 422), response.text
        if response.status_code == 200:
            assert response.json()["passed"] is False
    assert 422 in statuses
    assert not watch.seen, f"handling reader data ran code: {watch.seen[:5]}"
    import os

    assert not os.path.exists("/tmp/pwned")


def test_fuzz_against_the_openapi_schema(tmp_path):
    """schemathesis generates requests from the service's own OpenAPI schema:
    no input may make it fail with a server error or answer off its schema."""
    import schemathesis
    from hypothesis import HealthCheck, settings

    from service.app import create_app

    app = create_app(database_url=f"sqlite:///{tmp_path / 'fuzz.db'}", per_token=10**6, per_address=10**6)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures = []
    for operation in schema.get_all_operations():
        op = operation.ok()
        strategy = op.as_strategy()
        from hypothesis import given

        @given(case=strategy)
        @settings(max_examples=40, deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case):
            response = case.call()
            if response.status_code >= 500:
                failures.append((op.label, response.status_code, case.body))

        fuzz()
    assert not failures, failures[:3]


def test_a_restart_loses_and_duplicates_no_attempt(tmp_path):
    """Readers keep answering while the service is killed (SIGKILL) and started
    again: every verdict a reader received is recorded once, and nothing else is."""
    import asyncio

    from sqlalchemy import create_engine, text

    from _service import ServiceProcess
    from service import loadtest

    database = f"sqlite:///{tmp_path / 'restart.db'}"
    env = {"CHECK_SERVICE_RATE_PER_ADDRESS": "1000000", "CHECK_SERVICE_RATE_PER_TOKEN": "1000000"}
    service = ServiceProcess(database, env=env).start()

    async def restart(stats):
        while len(stats["acknowledged"]) < 40:
            await asyncio.sleep(0.05)
        await asyncio.to_thread(service.kill)
        stats["killed_after"] = len(stats["acknowledged"])
        await asyncio.sleep(1.0)
        await asyncio.to_thread(service.start)

    try:
        stats = loadtest.run(service.url, readers=8, seconds=10, during=restart)
    finally:
        service.kill()
    print(loadtest.summary(stats), "killed after", stats["killed_after"], "answers")
    with create_engine(database).connect() as connection:
        rows = connection.execute(text("SELECT case_id, passed FROM attempts")).all()
    recorded = [case_id for case_id, _ in rows]
    assert len(recorded) == len(set(recorded)), "an attempt was recorded twice"
    assert set(stats["acknowledged"]) <= set(recorded), "an acknowledged attempt was lost"
    assert set(recorded) <= stats["sent"]
    assert stats["transport_errors"] > 0, "the readers never noticed the restart"
    assert len(stats["acknowledged"]) > stats["killed_after"], "no answer after the restart"
    assert not stats["wrong"] and all(passed for _, passed in rows)


def test_a_release_notebook_checks_a_part_through_a_running_service(tmp_path):
    """A1's release notebook, answered and executed by nbclient, checks a part through
    the service on 127.0.0.1; the verdict shows in the cell, and the reader's
    progress page, opened in Chromium, lists the part as passed."""
    import os
    import pathlib

    import nbformat
    from nbclient import NotebookClient

    from _nbgrader import REPO, completed
    from _service import ServiceProcess

    chromium = pathlib.Path(os.environ.get("BNREF_CHROMIUM", "/usr/bin/chromium"))
    name = f"{A1}.ipynb"
    release = nbformat.read(REPO / "assignments" / A1 / name, as_version=4)
    nb = completed(release, nbformat.read(REPO / "solutions" / A1 / name, as_version=4))
    stop = next(i for i, c in enumerate(nb.cells) if c.source.strip() == 'check("bn_backward")')
    nb.cells = nb.cells[:stop + 1]
    with ServiceProcess(f"sqlite:///{tmp_path / 'nb.db'}") as service:
        (setup,) = [c for c in nb.cells if 'Checker("a1_batchnorm_numpy", url="")' in c.source]
        setup.source = setup.source.replace('url=""', f'url="{service.url}"')
        home = tmp_path / "home"
        home.mkdir()
        NotebookClient(nb, timeout=120, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute(env=dict(os.environ, HOME=str(home)))
        printed = "".join(o.get("text", "") for o in nb.cells[stop].outputs)
        assert "bn_backward: passed the hidden tests (attempt 1)." in printed, printed
        progress = next(line.split(": ", 1)[1] for line in printed.splitlines() if line.startswith("Your progress"))
        assert (home / ".bncourse").is_dir(), "the reader's token was not kept"
        if not chromium.exists():
            pytest.skip(f"Chromium not found at {chromium}: install it with `apt-get install chromium`")
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(chromium),
                                         args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
            page = browser.new_page()
            page.goto(progress)
            rows = page.locator("tbody tr").all_inner_texts()
            browser.close()
    assert any("bn_backward" in row and "passed" in row for row in rows), rows
    assert any("bn_forward_train" in row and "passed" in row for row in rows), rows
