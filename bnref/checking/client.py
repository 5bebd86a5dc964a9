"""Hidden-test feedback without an instructor: the readers' side of the check service.

Each assignment's notebook creates one :class:`Checker` and calls it after
each part::

    check = Checker("a1_batchnorm_numpy", url="https://checks.example.org")
    check("bn_forward_train")

A call asks the course's check service for fresh cases of that part, runs
the notebook's own functions on them here (the service never runs a
reader's code), sends the outputs back as data and prints the verdict: the
message a hidden test would give, never the test or its expected values.
It needs only the standard library and NumPy (torch for A2 and A3). With no
service configured, or none reachable, it says so and changes nothing.

The reader's token (no personal data) is kept in ``~/.bncourse/`` so that
the progress page counts every notebook; ``BNCOURSE_CHECK_TOKEN`` in the
environment overrides it.
"""
import hashlib
import json
import os
import pathlib
import sys
import urllib.error
import urllib.request

from bnref.checking import codec, driver

TOKEN_ENV = "BNCOURSE_CHECK_TOKEN"


class ServiceError(RuntimeError):
    """The service answered with an error (its message is in the exception)."""

    def __init__(self, status, detail):
        super().__init__(f"{status}: {detail}")
        self.status, self.detail = status, detail


def _caller_namespace():
    try:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None:
            return shell.user_ns
    except ImportError:
        pass
    return sys._getframe(2).f_globals


class Checker:
    """Check parts of one assignment against the course's check service.

    Args:
        assignment: the assignment's name, e.g. ``"a1_batchnorm_numpy"``.
        url: the service's base URL; empty means no service is configured.
        namespace: where the notebook's functions are (default: the notebook's globals).
        timeout: seconds to wait for each request.
    """

    def __init__(self, assignment, url="", namespace=None, timeout=60):
        if not isinstance(assignment, str) or not assignment:
            raise ValueError(f"assignment must be a non-empty string, got {assignment!r}")
        if not isinstance(url, str):
            raise ValueError(f"url must be a string, got {type(url).__name__}")
        self.assignment, self.url = assignment, url.strip().rstrip("/")
        if self.url.startswith("{{"):
            self.url = ""  # a notebook from solutions/, never generated
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        self.namespace, self.timeout = namespace, timeout

    # --- HTTP ------------------------------------------------------------
    def _post(self, path, payload=None):
        data = json.dumps(payload if payload is not None else {}).encode()
        request = urllib.request.Request(self.url + path, data=data, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            try:
                detail = json.loads(err.read()).get("detail", err.reason)
            except ValueError:
                detail = err.reason
            raise ServiceError(err.code, detail if isinstance(detail, str) else json.dumps(detail)) from None

    def _token_file(self):
        digest = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        return pathlib.Path.home() / ".bncourse" / f"check-token-{digest}"

    def token(self, renew=False):
        """The reader's token for this service: from the environment, the token file, or a new one."""
        if os.environ.get(TOKEN_ENV) and not renew:
            return os.environ[TOKEN_ENV]
        path = self._token_file()
        if path.is_file() and not renew:
            return path.read_text().strip()
        token = self._post("/tokens")["token"]
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(token)
            path.chmod(0o600)
        except OSError:
            pass  # a read-only home: the token lasts as long as this process
        os.environ[TOKEN_ENV] = token
        return token

    # --- checking ----------------------------------------------------------
    def _attempt(self, part, namespace):
        token = self.token()
        try:
            case = self._post("/cases", {"token": token, "assignment": self.assignment, "part": part})
        except ServiceError as err:
            if err.status != 404 or "token" not in err.detail:
                raise
            token = self.token(renew=True)
            case = self._post("/cases", {"token": token, "assignment": self.assignment, "part": part})
        request = codec.decode(case["request"])
        results = driver.run(namespace, request)
        verdict = self._post("/answers", {"token": token, "case_id": case["case_id"], "results": results})
        return verdict, token

    def __call__(self, part, namespace=None):
        """Check ``part`` online; print and return the verdict (None when there is no service)."""
        if not self.url:
            print("No check service is configured for this course (check_service_url in the book's "
                  "_config.yml is empty), so only the visible tests above ran.")
            return None
        namespace = namespace or self.namespace or _caller_namespace()
        try:
            verdict, token = self._attempt(part, namespace)
        except ServiceError as err:
            print(f"The check service refused the check of {part}: {err.detail}")
            return None
        except (urllib.error.URLError, OSError, ValueError, KeyError, codec.DecodeError) as err:
            reason = getattr(err, "reason", err)
            print(f"Could not reach the check service at {self.url} ({reason}); nothing was checked "
                  "and nothing in this notebook changed.")
            return None
        if verdict["passed"]:
            print(f"{part}: passed the hidden tests (attempt {verdict['attempts']}).")
        else:
            print(f"{part}: not yet (attempt {verdict['attempts']}): {verdict['message']}")
        print(f"Your progress: {self.url}/progress/{token}")
        return verdict
