"""JupyterHub configuration of the course hub (started by ``hub/hub.py start``).

Everything specific to one hub (accounts, folders, ports) comes from the
state file that ``hub/hub.py`` writes (``$BN_HUB_STATE``); this file only
turns it into JupyterHub settings:

* every account logs in with its own generated password (hashes in the
  state file, checked by :class:`CoursePasswords`);
* each account's server is a real Unix process of that account
  (``LocalProcessSpawner``), or, when the hub does not run as root, one demo
  account served as the hub's own user (``SimpleLocalProcessSpawner``);
* the instructor's server opens in the course directory (a working copy of
  the repository, readable by the instructor alone) and runs the Formgrader;
* every server runs the course's environment from the hub's ``runtime/``
  copy, never from the repository checkout;
* a student's server runs inside bubblewrap with the repository checkout
  replaced by an empty folder: its ``solutions/`` and git history are not
  there to read, and the course directory (with the gradebook) belongs to
  the instructor alone.
"""

import hashlib
import hmac
import json
import os

from jupyterhub.auth import Authenticator

STATE = json.load(open(os.environ["BN_HUB_STATE"]))


class CoursePasswords(Authenticator):
    """One generated password per account (scrypt hashes in the state file)."""

    async def authenticate(self, handler, data):
        account = STATE["accounts"].get(data.get("username", ""))
        if account is None:
            return None
        salt = bytes.fromhex(account["salt"])
        digest = hashlib.scrypt(data.get("password", "").encode(), salt=salt, n=2**14, r=8, p=1)
        if hmac.compare_digest(digest.hex(), account["scrypt"]):
            return data["username"]
        return None


c = get_config()  # noqa: F821 (injected by traitlets)

c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = STATE["port"]
c.JupyterHub.hub_port = STATE["port"] + 2  # the proxy's API takes port + 1
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{STATE['port'] + 1}"
c.ConfigurableHTTPProxy.command = [STATE["proxy"]]
c.ConfigurableHTTPProxy.pid_file = os.path.join(STATE["state_dir"], "proxy.pid")
c.JupyterHub.db_url = "sqlite:///" + os.path.join(STATE["state_dir"], "jupyterhub.sqlite")
c.JupyterHub.cookie_secret_file = os.path.join(STATE["state_dir"], "jupyterhub_cookie_secret")
c.JupyterHub.authenticator_class = CoursePasswords
c.Authenticator.allowed_users = set(STATE["accounts"])
c.Authenticator.admin_users = {STATE["instructor"]}

venv_bin = os.path.join(STATE["venv"], "bin")
c.Spawner.cmd = [os.path.join(venv_bin, "jupyterhub-singleuser")]
c.Spawner.default_url = "/lab"
# A terminal runs a plain (not login) shell, so that it keeps the PATH above
# with the course's nbgrader and python, which a login shell would reset.
c.Spawner.args = ["--ServerApp.terminado_settings=" + json.dumps({"shell_command": ["/bin/bash"]})]
c.Spawner.environment = {
    "PATH": os.pathsep.join([venv_bin, "/usr/local/bin", "/usr/bin", "/bin"]),
    "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET", ""),
}
# A loaded two-core machine needs more than the default 10 s to start JupyterLab.
c.Spawner.http_timeout = 180
c.Spawner.start_timeout = 240

if STATE["spawner"] == "local":
    c.JupyterHub.spawner_class = "jupyterhub.spawner.LocalProcessSpawner"
else:
    c.JupyterHub.spawner_class = "jupyterhub.spawner.SimpleLocalProcessSpawner"
    c.SimpleLocalProcessSpawner.home_dir_template = STATE["demo_home"]


def student_view(spawner):
    """The instructor works in the course directory; students in a bubblewrap view."""
    name = spawner.user.name
    if name == STATE["instructor"]:
        spawner.notebook_dir = STATE["course_dir"]
        return
    if STATE["spawner"] != "local":
        return
    hide = ["--tmpfs", STATE["repo"]]
    spawner.cmd = ([STATE["bwrap"], "--unshare-user", "--die-with-parent", "--dev-bind", "/", "/"]
                   + hide + ["--"] + list(c.Spawner.cmd))


c.Spawner.pre_spawn_hook = student_view
