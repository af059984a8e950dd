"""Where scheduled (and one-off) campaigns run: Ray jobs on a cluster, or local processes.

:class:`RayJobBackend` is ``ray job submit --working-dir DIR -- ENTRYPOINT`` through
``ray.job_submission.JobSubmissionClient``: the working directory is uploaded without the paths
in ``.rayignore`` (``.venv``, data, outputs; Ray reads that file itself and we pass the same list
as runtime_env ``excludes``), and the job inherits ``MLFLOW_TRACKING_URI`` / ``MATSCREEN_STORE``
from the submitting process when they are set.  Credentials are never forwarded: the cluster
nodes read them from their own environment or secrets file (orchestrator/ops/secrets.py).

:class:`LocalProcessBackend` runs the entrypoint as a detached process on this machine (no
cluster needed; `campaign run` then starts its own local Ray), keeping its pid, exit code and log
under ``.matscreen/jobs/<id>/`` so the status survives a scheduler restart.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from common.atomic import atomic_write_text
from common.errors import InputError
from orchestrator.ops.secrets import is_secret_name

DEFAULT_DASHBOARD = "http://127.0.0.1:8265"
# Environment forwarded to jobs so they find the cluster's MLflow server and data store.
FORWARDED_ENV = ("MLFLOW_TRACKING_URI", "MATSCREEN_STORE")
# Always excluded from the upload, in addition to the working directory's .rayignore.
# (gitignore syntax: a leading "/" anchors at the working directory, so package data such as
# chemspace/data/ still travels; only the top-level data/ and outputs/ stay home)
DEFAULT_EXCLUDES = [".venv/", "venv/", ".git/", "/.matscreen/", "/outputs/", "/out/", "/data/", "/mlruns/",
                    "/mlartifacts/", "__pycache__/", "*.egg-info/", ".pytest_cache/"]


def upload_excludes(working_dir: str | os.PathLike) -> list[str]:
    """runtime_env ``excludes`` for ``working_dir``: the defaults plus its ``.rayignore`` patterns."""
    patterns = list(DEFAULT_EXCLUDES)
    ignore = Path(working_dir) / ".rayignore"
    if ignore.is_file():
        for line in ignore.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#") and line not in patterns:
                patterns.append(line)
    return patterns


def forwarded_env(environ=None) -> dict[str, str]:
    """The tracking/store variables to hand to a job (absolute paths; never a credential)."""
    environ = os.environ if environ is None else environ
    env = {}
    for name in FORWARDED_ENV:
        value = environ.get(name)
        if value and not is_secret_name(name):
            if name == "MATSCREEN_STORE" and "://" not in value:
                value = str(Path(value).resolve())
            if name == "MLFLOW_TRACKING_URI" and value.startswith("sqlite:///") and not value.startswith("sqlite:////"):
                value = "sqlite:///" + str(Path(value[len("sqlite:///"):]).resolve())
            env[name] = value
    return env


def runtime_env(working_dir: str | os.PathLike, environ=None) -> dict:
    """The runtime_env of a matscreen job: small working_dir upload plus tracking variables."""
    env = {"working_dir": str(working_dir), "excludes": upload_excludes(working_dir)}
    variables = forwarded_env(environ)
    if variables:
        env["env_vars"] = variables
    return env


def dashboard_address(address: str | None = None) -> str:
    """The Ray dashboard (job server) address: argument, else ``$RAY_ADDRESS`` when it is an
    ``http(s)://`` job-server URL (a GCS ``host:6379`` address there is meant for ``ray.init``),
    else ``http://127.0.0.1:8265``."""
    env = os.environ.get("RAY_ADDRESS", "")
    address = address or (env if env.startswith(("http://", "https://")) else "") or DEFAULT_DASHBOARD
    if address.startswith("ray://") or address == "auto":
        raise InputError(f"Ray address {address!r} is not a job-server address; give the dashboard URL, e.g. {DEFAULT_DASHBOARD}")
    return address if "://" in address else f"http://{address}"


def ray_auth_token() -> str | None:
    """The Ray token this client sends, where Ray keeps it: ``$RAY_AUTH_TOKEN``, else the file
    ``$RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token`` (written by ``ray start --head`` / ``ray.init``,
    printed by ``ray get-auth-token``); None when there is none."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


AUTH_FIX = ("this Ray cluster uses token authentication (Ray's default): put the cluster's token (`ray "
            "get-auth-token` on the head) in ~/.ray/auth_token or $RAY_AUTH_TOKEN on this machine, and for the "
            "`ray` CLI also export RAY_AUTH_MODE=token")


class RayJobBackend:
    """Submit and poll Ray jobs on the cluster whose dashboard listens at ``address`` (sending the Ray
    auth token when this machine has one, so token-protected clusters work as `ray job submit` does)."""

    def __init__(self, address: str | None = None):
        self.address = dashboard_address(address)
        self._client = None

    @property
    def client(self):
        if self._client is None:
            from ray.exceptions import AuthenticationError
            from ray.job_submission import JobSubmissionClient

            token = ray_auth_token()
            headers = {"authorization": f"Bearer {token}"} if token else {}
            try:
                self._client = JobSubmissionClient(self.address, headers=headers)
            except (ConnectionError, RuntimeError, AuthenticationError) as exc:
                self._refused(exc)
                raise InputError(f"cannot reach the Ray job server at {self.address} ({_first_line(exc)}); "
                                 "start the cluster (`ray start --head --dashboard-host 127.0.0.1`) or set RAY_ADDRESS") from None
        return self._client

    def _refused(self, exc: BaseException) -> None:
        """An authentication failure becomes one line naming the fix (other errors pass through)."""
        text = f"{type(exc).__name__} {exc}".lower()
        if "authenticat" in text or "unauthorized" in text or " 401" in text or " 403" in text:
            raise InputError(f"the Ray job server at {self.address} refused this client ({_first_line(exc)}); "
                             f"{AUTH_FIX}") from None

    def submit(self, entrypoint: str, submission_id: str, working_dir: str, metadata: dict[str, str]) -> str:
        from ray.exceptions import AuthenticationError

        try:
            return self.client.submit_job(entrypoint=entrypoint, submission_id=submission_id,
                                          runtime_env=runtime_env(working_dir), metadata=metadata)
        except (RuntimeError, AuthenticationError) as exc:
            if "already exists" in str(exc):
                return submission_id  # this slot was submitted before a crash: do not start it twice
            self._refused(exc)
            raise

    def status(self, job_id: str) -> str:
        from ray.exceptions import AuthenticationError

        try:
            return str(self.client.get_job_status(job_id).value)
        except (RuntimeError, AuthenticationError) as exc:
            if "does not exist" in str(exc) or "404" in str(exc):
                return "LOST"
            self._refused(exc)
            raise

    def logs(self, job_id: str) -> str:
        return self.client.get_job_logs(job_id)


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__


class LocalProcessBackend:
    """Run jobs as detached local processes; state in ``<jobs_dir>/<id>/{pid,rc,log}``."""

    def __init__(self, jobs_dir: str | os.PathLike = Path(".matscreen") / "jobs"):
        self.jobs_dir = Path(jobs_dir).resolve()

    def submit(self, entrypoint: str, submission_id: str, working_dir: str, metadata: dict[str, str]) -> str:
        job_dir = self.jobs_dir / submission_id
        if (job_dir / "pid").exists():
            return submission_id
        job_dir.mkdir(parents=True, exist_ok=True)
        rc_file = job_dir / "rc"
        script = f'{entrypoint}\nrc=$?\necho $rc > "{rc_file}.tmp" && mv "{rc_file}.tmp" "{rc_file}"\n'
        env = dict(os.environ)
        env.update(forwarded_env())
        # the job finds the same installation's `matscreen` as the scheduler
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        with open(job_dir / "log", "ab") as log:
            proc = subprocess.Popen(["sh", "-c", script], cwd=working_dir, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, env=env)
        atomic_write_text(job_dir / "pid", f"{proc.pid}\n")
        self._children = getattr(self, "_children", {})
        self._children[submission_id] = proc  # reaped in status(), so no zombie lingers
        return submission_id

    def status(self, job_id: str) -> str:
        job_dir = self.jobs_dir / job_id
        proc = getattr(self, "_children", {}).get(job_id)
        if proc is not None:
            proc.poll()
        rc_file = job_dir / "rc"
        if rc_file.exists():
            return "SUCCEEDED" if rc_file.read_text().strip() == "0" else "FAILED"
        pid_file = job_dir / "pid"
        if not pid_file.exists():
            return "LOST"
        if proc is not None:
            return "RUNNING" if proc.returncode is None else "FAILED"
        try:
            os.kill(int(pid_file.read_text()), 0)
        except (ProcessLookupError, ValueError):
            return "FAILED" if not rc_file.exists() else self.status(job_id)
        except PermissionError:
            pass
        return "RUNNING"

    def logs(self, job_id: str) -> str:
        log = self.jobs_dir / job_id / "log"
        return log.read_text(errors="replace") if log.exists() else ""


def package_working_dir(working_dir: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Zip ``working_dir`` exactly as Ray uploads it (its .gitignore/.rayignore plus our excludes).

    For checking the upload size before submitting; uses Ray's own packer.
    """
    from ray._private.runtime_env.packaging import create_package

    target = Path(target)
    create_package(str(Path(working_dir).resolve()), target, include_gitignore=True,
                   excludes=upload_excludes(working_dir), logger=None)
    return target
