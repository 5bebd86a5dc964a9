"""Course settings shared by the nbgrader config, the tools and the tests.

The repository URL lives in ONE place, ``repository.url`` in ``_config.yml``
(the book's launch buttons use it too). ``nbgrader generate_assignment``
writes it into each release notebook's install cell through
:class:`grader.preprocessors.InsertRepositoryURL`, so a fork changes one line
and regenerates.
"""

import pathlib
import re

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
COURSE_ID = "batchnorm-course"
ASSIGNMENTS = ("a1_batchnorm_numpy", "a2_test_time_inference", "a3_triton_batchnorm")
URL_PLACEHOLDER = "{{REPOSITORY_URL}}"
SERVICE_PLACEHOLDER = "{{CHECK_SERVICE_URL}}"


def repository_url(config_path=None):
    """``repository.url`` from the book's ``_config.yml``, without a trailing slash."""
    import yaml

    path = pathlib.Path(config_path or REPO_ROOT / "_config.yml")
    config = yaml.safe_load(path.read_text())
    url = (config.get("repository") or {}).get("url")
    if not isinstance(url, str) or not re.match(r"https?://", url):
        raise ValueError(
            f"repository.url in {path} must be an http(s) URL, got {url!r}"
        )
    return url.rstrip("/")


def check_service_url(config_path=None):
    """``check_service_url`` from ``_config.yml``: the readers' check service, or "" for none."""
    import yaml

    path = pathlib.Path(config_path or REPO_ROOT / "_config.yml")
    url = yaml.safe_load(path.read_text()).get("check_service_url") or ""
    if not isinstance(url, str) or (url and not re.match(r"https?://", url)):
        raise ValueError(f"check_service_url in {path} must be empty or an http(s) URL, got {url!r}")
    return url.rstrip("/")
