"""One assignment on a real JupyterHub, clicked through in Chromium.

``hub/hub.py start`` starts a hub of its own for this module (its own folder,
port and Unix accounts, removed afterwards), and Playwright drives the pages a
person uses:

* the instructor opens the Formgrader, generates and releases A1;
* student 1 fetches A1 in the Assignments tab, fills in the solution,
  validates and submits; student 2 submits too early (nothing done), then
  fills in a solution with one typical mistake and submits again;
* the instructor collects, autogrades (the grading kernels must run inside
  bubblewrap, seen in the process table), grades the hand-graded answer in
  the manual grading view, generates and releases feedback, and exports the
  grades from a terminal with ``nbgrader export``;
* each student fetches feedback and sees their own score, no hidden test code
  and nothing of the other student; from a student's terminal, the course
  directory's ``solutions/`` and gradebook, the repository checkout and the
  other student's home are out of reach.

Expected scores come from the source notebook (the points of its graded
cells), not from the grader. Screenshots land in ``_build/hub-test/``.

Needs root (real accounts), bubblewrap, Chromium and ``make hub-install``.

Environment variables:
    BNREF_CHROMIUM      the Chromium executable (default: /usr/bin/chromium).
    BNREF_HUB_ARTIFACTS where screenshots and the CSV go (default: _build/hub-test).
"""

import csv
import json
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("BNREF_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
ARTIFACTS = Path(os.environ.get("BNREF_HUB_ARTIFACTS", ROOT / "_build" / "hub-test"))
PROXY = Path(sys.prefix) / "hub-npm" / "node_modules" / ".bin" / "configurable-http-proxy"
A1 = "a1_batchnorm_numpy"
SOURCE = ROOT / "solutions" / A1 / f"{A1}.ipynb"
RELEASE = ROOT / "assignments" / A1 / f"{A1}.ipynb"
SLOW_MS = int(os.environ.get("BNREF_HUB_SLOW_MS", 240_000))  # spawning JupyterLab or grading on a loaded two-core machine

# Typical mistakes, tried in order on the first solution cell that has one:
# the unbiased variance where batch normalization uses the biased one, or a
# wrong letter in a multiple-choice answer.
MISTAKES = [
    (re.compile(r"\(xmu \*\* 2\)\.mean\(axis=0\)"), "(xmu ** 2).sum(axis=0) / (N - 1)"),
    (re.compile(r'^(answer_\w+ = )"(\w)"', re.M), None),
]


def _missing_requirements():
    if os.geteuid() != 0:
        return "the hub test creates Unix accounts and needs root"
    if shutil.which("jupyterhub", path=str(Path(sys.prefix) / "bin")) is None or not PROXY.exists():
        return "JupyterHub or configurable-http-proxy missing: run `make hub-install`"
    if shutil.which("bwrap") is None:
        return "bubblewrap missing: apt-get install bubblewrap"
    if not CHROMIUM.exists():
        return f"Chromium not found at {CHROMIUM}: apt-get install chromium, or set BNREF_CHROMIUM"
    if not (ROOT / ".git").exists():
        return "the hub clones the repository into its course directory: needs a git checkout"
    return None


# ---------------------------------------------------------------- notebooks


def _cells(path):
    return json.loads(Path(path).read_text())["cells"]


def _meta(cell):
    return cell.get("metadata", {}).get("nbgrader", {})


def _points():
    """(total points, points of the hand-graded cells) of A1's source notebook."""
    graded = [_meta(c) for c in _cells(SOURCE) if _meta(c).get("grade")]
    manual = [m for m in graded if m.get("solution")]  # answer cells graded by hand
    return sum(m["points"] for m in graded), manual


def _solution_text(cell):
    """The source cell with nbgrader's markers removed: what a good student writes."""
    lines = "".join(cell["source"]).splitlines()
    keep = [ln for ln in lines if ln.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION")]
    return "\n".join(keep)


def _answers(mistake=False):
    """{release cell index: text} for every answer cell of the released A1."""
    source = {_meta(c).get("grade_id"): c for c in _cells(SOURCE) if _meta(c).get("solution")}
    answers = {}
    for i, cell in enumerate(_cells(RELEASE)):
        grade_id = _meta(cell).get("grade_id")
        if _meta(cell).get("solution") and grade_id in source:
            text = _solution_text(source[grade_id])
            if cell["cell_type"] == "markdown":
                text = ("The closed-form backward pass was faster: it reads dout and x_hat "
                        "once and makes fewer temporary arrays than the staged one.")
            answers[i] = text
    if mistake:
        for pattern, replacement in MISTAKES:
            for i, text in answers.items():
                if pattern.search(text):
                    if replacement is None:  # pick another letter
                        letter = pattern.search(text).group(2)
                        other = "a" if letter != "a" else "b"
                        answers[i] = pattern.sub(rf'\g<1>"{other}"', text, count=1)
                    else:
                        answers[i] = pattern.sub(replacement, text, count=1)
                    return answers
        raise AssertionError("none of the typical mistakes applies to A1's solutions any more: "
                             "add one to MISTAKES")
    return answers


def _hidden_test_lines():
    """Lines of hidden test code, long enough and absent from the released notebook."""
    released = "".join("".join(c["source"]) for c in _cells(RELEASE))
    lines = []
    for cell in _cells(SOURCE):
        hidden = re.findall(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS",
                            "".join(cell["source"]), re.S)
        lines += [ln.strip() for block in hidden for ln in block.splitlines() if len(ln.strip()) > 20]
    return [ln for ln in lines if ln not in released]


# ---------------------------------------------------------------- the hub


def _free_port_block():
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port > 60000:
            continue
        try:
            for p in (port, port + 1, port + 2):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
    raise RuntimeError("no three free consecutive ports on 127.0.0.1")


def _end_processes_of(name):
    """Kill what is left of the test's own account (the hub stops its servers first)."""
    try:
        uid = pwd.getpwnam(name).pw_uid
    except KeyError:
        return
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid == uid:
                os.kill(int(pid), 9)
        except OSError:
            pass


@pytest.fixture(scope="module")
def hub():
    reason = _missing_requirements()
    if reason:
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="bn-hub-test-"))
    prefix = "bnt" + secrets.token_hex(3)
    env = dict(os.environ, BN_HUB_ROOT=str(root), BN_HUB_PREFIX=prefix,
               BN_HUB_PORT=str(_free_port_block()), BN_HUB_STUDENTS="2")
    cmd = [sys.executable, str(ROOT / "hub" / "hub.py")]
    t0 = time.monotonic()
    started = subprocess.run(cmd + ["start"], env=env, capture_output=True, text=True)
    state = json.loads((root / "state" / "hub.json").read_text()) if started.returncode == 0 else None
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        print(started.stdout, f"(hub.py start took {time.monotonic() - t0:.1f} s)")
        state["passwords"] = json.loads((root / "state" / "passwords.json").read_text())
        state["base"] = f"http://127.0.0.1:{env['BN_HUB_PORT']}"
        yield state
    finally:
        subprocess.run(cmd + ["stop"], env=env, capture_output=True)
        for name in [f"{prefix}-instructor", f"{prefix}-student1", f"{prefix}-student2"]:
            _end_processes_of(name)
            subprocess.run(["userdel", "--remove", name], capture_output=True)
        log = root / "state" / "jupyterhub.log"
        if log.exists():
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shutil.copy(log, ARTIFACTS / "jupyterhub.log")
        shutil.rmtree(root, ignore_errors=True)


try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
except ImportError:  # the browser fixture skips with the reason
    PlaywrightTimeout = TimeoutError


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="Python playwright missing: pip install -r requirements.txt")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


PEOPLE = []


def _keep_evidence():
    """On a failure, each person's last page as a screenshot and as text."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for person in PEOPLE:
        try:
            person.shot(f"FAILED_{person.name}")
            (ARTIFACTS / f"FAILED_{person.name}.txt").write_text(
                person.page.url + "\n" + person.page.locator("body").inner_text(timeout=5000))
        except Exception as err:  # the evidence is best effort
            print(f"no evidence from {person.name}: {err}")


class Person:
    """One account's browser context, logged in to its JupyterLab."""

    def __init__(self, browser, hub, name):
        PEOPLE.append(self)
        self.name, self.hub, self.base = name, hub, hub["base"]
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.context.set_default_timeout(60_000)
        self.context.route("**/*", _local_only)
        self.page = self.context.new_page()
        page = self.page
        page.goto(f"{self.base}/hub/login")
        page.fill("#username_input", name)
        page.fill("#password_input", hub["passwords"][name])
        page.click("#login_submit")
        self.url = f"{self.base}/user/{name}"
        self._wait_lab()

    def _wait_lab(self):
        """Wait for JupyterLab, or fail at once with the hub's error page."""
        deadline = time.monotonic() + SLOW_MS / 1000
        while time.monotonic() < deadline:
            try:
                if self.page.locator("#jp-main-dock-panel").count():
                    return
                body = self.page.locator("body").inner_text(timeout=2000)
            except Exception:  # a navigation replaced the page meanwhile
                body = ""
            if re.search(r"Spawn failed|Internal Server Error|\b500\b", body):
                raise AssertionError(f"{self.name}'s server did not start:\n{body[:2000]}")
            time.sleep(0.5)
        raise AssertionError(f"{self.name}'s JupyterLab did not appear within {SLOW_MS // 1000} s")

    def shot(self, label, page=None):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (page or self.page).screenshot(path=str(ARTIFACTS / f"{label}.png"), full_page=False)

    def menu(self, top, command_id):
        """Run a JupyterLab command from the main menu, as a person would."""
        self.page.locator(f".lm-MenuBar-itemLabel:text-is('{top}')").click()
        self.page.locator(f'.lm-Menu li[data-command="{command_id}"]').click()

    def terminal(self, line):
        """Open a terminal from JupyterLab's launcher and type one command line."""
        self.page.goto(f"{self.url}/lab?reset")
        self._wait_lab()
        self.page.locator(".jp-LauncherCard:has-text('Terminal')").click()
        term = self.page.locator(".jp-Terminal").last
        term.wait_for(timeout=SLOW_MS)
        self.page.wait_for_timeout(1500)  # the shell's prompt
        term.click()
        self.page.keyboard.type(line + "\n", delay=5)


def _local_only(route):
    if route.request.url.startswith(("http://127.0.0.1", "ws://127.0.0.1")):
        route.continue_()
    else:
        route.abort()


def _wait_file(path, timeout_s=120):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size > 0:
            time.sleep(0.5)
            return path.read_text()
        time.sleep(0.5)
    raise AssertionError(f"{path} did not appear within {timeout_s} s")


# ---------------------------------------------------------------- steps


def _formgrader(person):
    page = person.page
    page.goto(f"{person.url}/formgrader/manage_assignments")
    row = page.locator("#main-table tr", has=page.locator(f"td.name[data-order='{A1}']"))
    row.wait_for(timeout=SLOW_MS)
    return row


def _formgrader_action(person, row, cell, label):
    """Click one action of the Formgrader and close its success dialog."""
    page = person.page
    row.locator(f"td.{cell} a").click()
    modal = page.locator("#success-modal, #error-modal")
    modal.wait_for(timeout=SLOW_MS)
    person.shot(label)
    assert modal.get_attribute("id") == "success-modal", modal.inner_text()
    modal.locator(".modal-footer button").first.click()
    modal.wait_for(state="detached")


def _assignments_tab(person):
    person.page.goto(f"{person.url}/lab")
    person._wait_lab()
    person.menu("Nbgrader", "nbgrader:open-assignment-list")
    person.page.wait_for_selector("#released_assignments_list", timeout=SLOW_MS)


def _list_rows(person, name, count):
    page = person.page
    rows = page.locator(f"#{name}_assignments_list > .list_item")
    deadline = time.monotonic() + 120
    while rows.count() != count:
        assert time.monotonic() < deadline, f"{name} list: {rows.count()} rows, expected {count}"
        page.wait_for_timeout(500)
    return rows


def _open_notebook(person):
    page = person.page
    page.goto(f"{person.url}/lab/tree/{A1}/{A1}.ipynb")
    cells = page.locator(".jp-Notebook .jp-Cell")
    n = len(_cells(RELEASE))
    deadline = time.monotonic() + SLOW_MS / 1000
    while cells.count() != n:
        assert time.monotonic() < deadline, f"notebook shows {cells.count()} cells, expected {n}"
        page.wait_for_timeout(500)
    return cells


def _fill(person, answers):
    """Type each answer into its cell, as a student does, and save."""
    page = person.page
    cells = _open_notebook(person)
    for index, text in answers.items():
        cell = cells.nth(index)
        cell.scroll_into_view_if_needed()
        if "jp-MarkdownCell" in (cell.get_attribute("class") or ""):
            cell.dblclick()
        cell.locator(".cm-content").click()
        page.keyboard.press("Control+a")
        page.keyboard.insert_text(text)
        page.keyboard.press("Escape")
    page.keyboard.press("Control+s")
    page.wait_for_function("() => !document.querySelector('.jp-mod-current.jp-mod-dirty')")
    page.wait_for_timeout(500)


def _submit(person, expected_submissions):
    _assignments_tab(person)
    rows = _list_rows(person, "fetched", 1)
    rows.first.locator('.item_status button:text("Submit")').click()
    page = person.page
    items = page.locator(f"#submitted_assignments_list .list_item .item_name")
    deadline = time.monotonic() + 120
    # one header row per assignment, then one row per submission
    while page.locator("#submitted_assignments_list .list_item").count() < expected_submissions + 1:
        assert time.monotonic() < deadline, "the submission did not appear in the Assignments tab"
        page.wait_for_timeout(500)
    return items


def _parent_command(pid):
    try:
        ppid = re.search(r"^PPid:\s+(\d+)", Path(f"/proc/{pid}/status").read_text(), re.M).group(1)
        return Path(f"/proc/{ppid}/comm").read_text().strip()
    except (OSError, AttributeError):
        return None


class KernelWatch:
    """Records the command lines of the grading kernels while autograding runs."""

    def __init__(self, uid):
        self.uid, self.seen, self._stop = uid, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    if os.stat(f"/proc/{pid}").st_uid != self.uid:
                        continue
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                text = [a.decode(errors="replace") for a in argv if a]
                if any("ipykernel" in a for a in text) and text not in [s[0] for s in self.seen]:
                    self.seen.append((text, _parent_command(pid)))
            time.sleep(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _give_points(page, cell):
    """Type a hand-graded cell's points into the Formgrader; wait until it saved them."""
    box = page.locator(f"input.score#{cell['grade_id']}")
    box.wait_for(timeout=SLOW_MS)
    saved = lambda r: "/api/grade/" in r.url and r.request.method == "PUT"
    for _ in range(10):  # typed before the page's script listens: nothing is sent
        try:
            with page.expect_response(saved, timeout=10_000) as response:
                box.fill("")
                box.fill(str(cell["points"]))
                box.press("Tab")  # a change saves the score
            assert response.value.ok, f"saving the score failed: HTTP {response.value.status}"
            return
        except PlaywrightTimeout:
            continue
    raise AssertionError(f"the Formgrader never saved the score of {cell['grade_id']}")


# ---------------------------------------------------------------- the walk


def test_instructor_and_two_students_complete_a1(hub, browser):
    try:
        _walk(hub, browser)
    except BaseException:
        _keep_evidence()
        raise


def _walk(hub, browser):
    total, manual = _points()
    manual_points = sum(m["points"] for m in manual)
    assert manual, "A1 has a hand-graded answer; the walk grades it in the Formgrader"
    instructor, (student1, student2) = hub["instructor"], hub["students"]
    t0 = time.monotonic()
    timings = {}

    # The instructor generates and releases A1 from the Formgrader.
    teacher = Person(browser, hub, instructor)
    row = _formgrader(teacher)
    teacher.shot("01_formgrader")
    _formgrader_action(teacher, row, "assign", "02_formgrader_generated")
    row = _formgrader(teacher)
    _formgrader_action(teacher, row, "release", "03_formgrader_released")
    timings["release"] = time.monotonic() - t0

    # Student 1: fetch, solve, validate, submit.
    s1 = Person(browser, hub, student1)
    _assignments_tab(s1)
    rows = _list_rows(s1, "released", 1)
    s1.shot("04_assignments_tab")
    rows.first.locator(".item_status button").click()
    _list_rows(s1, "fetched", 1)
    _fill(s1, _answers())
    s1.page.locator(".validate-button").first.click()
    dialog = s1.page.locator(".jp-Dialog")
    dialog.wait_for(timeout=SLOW_MS)
    s1.page.wait_for_function(
        "() => !/Validating/.test(document.querySelector('.jp-Dialog')?.innerText || '')",
        timeout=SLOW_MS)
    s1.shot("05_validated_notebook")
    assert "Success" in dialog.inner_text(), dialog.inner_text()
    dialog.locator("button").last.click()
    _submit(s1, 1)
    timings["student1"] = time.monotonic() - t0

    # Student 2: submits too early, then once more with one typical mistake.
    s2 = Person(browser, hub, student2)
    _assignments_tab(s2)
    rows = _list_rows(s2, "released", 1)
    rows.first.locator(".item_status button").click()
    _list_rows(s2, "fetched", 1)
    _submit(s2, 1)
    _fill(s2, _answers(mistake=True))
    _submit(s2, 2)
    s2.shot("06_student2_resubmitted")
    timings["student2"] = time.monotonic() - t0

    # The instructor collects, autogrades, grades by hand, releases feedback.
    row = _formgrader(teacher)
    _formgrader_action(teacher, row, "collect", "07_collected")
    teacher.page.goto(f"{teacher.url}/formgrader/manage_submissions/{A1}")
    uid = pwd.getpwnam(instructor).pw_uid
    with KernelWatch(uid) as watch:
        for student in (student1, student2):
            srow = teacher.page.locator("#main-table tr",
                                        has=teacher.page.locator(f"td.student-id[data-order='{student}']"))
            srow.wait_for(timeout=SLOW_MS)
            _formgrader_action(teacher, srow, "autograde", f"08_autograded_{student[-8:]}")
            teacher.page.goto(f"{teacher.url}/formgrader/manage_submissions/{A1}")
    # Each kernel is bwrap's command, or a process that bwrap started.
    kernels = [argv for argv, parent in watch.seen if os.path.basename(argv[0]) != "bwrap"]
    assert kernels, f"no grading kernel was seen while autograding: {watch.seen}"
    for argv, parent in watch.seen:
        assert "bwrap" in (os.path.basename(argv[0]), parent), \
            f"a grading kernel ran outside bubblewrap: {argv} (parent {parent})"
    timings["autograde"] = time.monotonic() - t0

    page = teacher.page
    page.goto(f"{teacher.url}/formgrader/gradebook/{A1}/{A1}")
    links = page.locator("a[href*='/formgrader/submissions/']")
    links.first.wait_for(timeout=SLOW_MS)
    hrefs = list(dict.fromkeys(links.nth(i).get_attribute("href") for i in range(links.count())))
    assert len(hrefs) == 2, hrefs
    for k, href in enumerate(hrefs):
        url = href if href.startswith("http") else f"{hub['base']}{href}"
        page.goto(url)
        for m in manual:
            _give_points(page, m)
        page.goto(url)  # the saved scores, as the formgrader shows them again
        for m in manual:
            box = page.locator(f"input.score#{m['grade_id']}")
            box.wait_for(timeout=SLOW_MS)
            deadline = time.monotonic() + 60  # the page fills in the scores after it loads
            while not box.input_value() and time.monotonic() < deadline:
                page.wait_for_timeout(300)
            assert box.input_value() and float(box.input_value()) == m["points"], \
                f"{m['grade_id']}: the Formgrader shows {box.input_value()!r} after saving {m['points']}"
        box.scroll_into_view_if_needed()
        teacher.shot(f"09_manual_grading_{k + 1}")
    row = _formgrader(teacher)
    _formgrader_action(teacher, row, "generate-feedback", "10_feedback_generated")
    row = _formgrader(teacher)
    _formgrader_action(teacher, row, "release-feedback", "11_feedback_released")

    # Grades exported from a terminal in the instructor's JupyterLab.
    course = Path(hub["course_dir"])
    teacher.terminal(f"cd {course} && nbgrader export --to grades.csv > export.log 2>&1")
    grades = list(csv.DictReader(_wait_file(course / "grades.csv").splitlines()))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "grades.csv").write_text((course / "grades.csv").read_text())
    scores = {g["student_id"]: float(g["score"]) for g in grades if g["assignment"] == A1}
    max_scores = {float(g["max_score"]) for g in grades if g["assignment"] == A1}
    assert max_scores == {float(total)}, (max_scores, total)
    assert scores[student1] == pytest.approx(total), grades
    # The later submission counts: the early one scored no autograded point.
    assert manual_points < scores[student2] < total, grades
    timings["graded"] = time.monotonic() - t0

    # Each student fetches feedback and sees their own score only.
    hidden = _hidden_test_lines()
    assert hidden, "A1 has hidden tests"
    for person, other, expected in ((s1, student2, total), (s2, student1, scores[student2])):
        _assignments_tab(person)
        page = person.page
        page.locator('#submitted_assignments_list button:text("Fetch Feedback")').first.click()
        page.locator("#submitted_assignments_list a:text('(view feedback)')").first.wait_for(
            timeout=SLOW_MS)
        home = Path(pwd.getpwnam(person.name).pw_dir)
        (feedback,) = sorted((home / A1 / "feedback").glob(f"*/{A1}.html"))[-1:]
        page.goto(f"{person.url}/files/{feedback.relative_to(home).as_posix()}")
        text = page.locator("body").inner_text()
        person.shot(f"12_feedback_{person.name[-8:]}")
        assert re.search(rf"{expected:g}(\.0+)?\s*/\s*{total:g}", text), text[:2000]
        assert "BEGIN HIDDEN TESTS" not in text
        leaked = [ln for ln in hidden if ln in text]
        assert not leaked, f"hidden test code in {person.name}'s feedback: {leaked[:3]}"
        assert other not in text

    # From a student's terminal: no solutions, no gradebook, no other homes,
    # while the student's own work is there (the probe can see).
    home1, home2 = (Path(pwd.getpwnam(s).pw_dir) for s in (student1, student2))
    probes = {course / "solutions": "HIDDEN", course / "gradebook.db": "HIDDEN",
              ROOT / "solutions": "HIDDEN", ROOT / ".git": "HIDDEN", home2 / A1: "HIDDEN",
              home1 / A1: "SEEN"}
    line = ("for p in " + " ".join(str(p) for p in probes) + "; do "
            'if ls "$p" >/dev/null 2>&1; then echo "SEEN $p"; else echo "HIDDEN $p"; fi; '
            "done > ~/probe.txt")
    s1.terminal(line)
    probe = _wait_file(home1 / "probe.txt")
    s1.shot("13_student_terminal")
    assert all(p.exists() for p in probes), "the probe must name paths that exist on the host"
    assert probe.split() == [w for p, seen in probes.items() for w in (seen, str(p))], probe
    timings["total"] = time.monotonic() - t0
    print("walk timings (s, cumulative):", {k: round(v) for k, v in timings.items()})


# ---------------------------------------------------------------- deployment files


def test_hub_and_z2jh_use_the_course_id_and_one_exchange():
    """The hub's and the Helm fragment's student settings agree with the course."""
    yaml = pytest.importorskip("yaml")
    from traitlets.config import Config

    from grader.course import COURSE_ID

    sys.path.insert(0, str(ROOT / "hub"))
    try:
        import hub as hub_module
    finally:
        sys.path.remove(str(ROOT / "hub"))
    assert hub_module.COURSE_ID == COURSE_ID

    values = yaml.safe_load((ROOT / "deploy" / "z2jh" / "values.yaml").read_text())
    single = values["singleuser"]
    config = Config()
    exec(single["extraFiles"]["nbgrader-config"]["stringData"], {"get_config": lambda: config})
    assert config.CourseDirectory.course_id == COURSE_ID
    mounts = {m["name"]: m["mountPath"] for m in single["storage"]["extraVolumeMounts"]}
    volumes = {v["name"] for v in single["storage"]["extraVolumes"]}
    assert mounts["nbgrader-exchange"] == config.Exchange.root
    assert set(mounts) <= volumes
    hook = values["hub"]["extraConfig"]["course-directory"]
    compile(hook, "course-directory", "exec")
    dockerfile = (ROOT / "deploy" / "z2jh" / "Dockerfile").read_text()
    for needed in ("requirements.txt", "requirements.lock"):
        assert needed in dockerfile and (ROOT / needed).exists(), needed
