"""Workload: a process the edge agents run on every node a selector picks.

How: ``spec.nodeSelector`` picks nodes by their labels; every picked node
runs one instance of ``spec.template``: a command with arguments,
environment, files written into the workload's own directory, declared
ports, a health probe and lifecycle hooks. The agent supervises the process
(restarting it by ``restartPolicy``) and keeps it running when the cloud is
unreachable. The cache server is the first workload of every edge node.

A template's *revision* (:func:`template_revision`) is a hash of its
canonical JSON. The edge compares revisions, not store revisions, so after a
store restore a workload whose template did not change is not restarted.
Rollouts move nodes from one revision to the next in batches.

A template may name a *built-in* workload (``builtin: cache``): the agent then
adds what only it knows, from the node's view: the cache server's config file
(domains, site peers, parent sites), its command line and where to probe it.
See :mod:`edgefleet.edge.cacheconfig`. ``builtin`` is part of the revision
only when set, so templates written before it existed keep their revision.

Why the env map is normalised into a list: both spellings are common in
manifests, and one stored form keeps comparisons (``apply``, revisions)
exact. Files may only land inside the workload's directory, so paths are
relative and free of ``..``.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from edgefleet.api.artifacts import check_version
from edgefleet.api.common import (
    Count,
    Port,
    PositiveSeconds,
    Seconds,
    cell,
    check_unique_by,
)
from edgefleet.api.errors import FieldValueError
from edgefleet.api.instances import InstanceStatus as InstanceStatus  # its home before Node needed it alone
from edgefleet.api.meta import (
    Column,
    KindInfo,
    Model,
    Resource,
    check_dns1123_label,
    check_dns1123_subdomain,
    register,
)
from edgefleet.api.rollouts import Condition, RolloutState, RolloutStrategy, SiteCounts, VersionPin
from edgefleet.api.selectors import Selector, SelectorText, parse_selector

MAX_FILE_BYTES = 1024 * 1024
"""Security limit on one file's content, in UTF-8 bytes."""

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_env_name(name: str) -> str:
    if not _ENV_NAME.match(name):
        raise ValueError(f"{name!r} is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)")
    return name


def _check_arg(arg: str) -> str:
    if "\0" in arg:
        raise ValueError("must not contain NUL characters")
    return arg


def _check_relative_path(path: str) -> str:
    if not path or path.startswith("/") or "\\" in path or "\0" in path:
        raise ValueError(f"{path!r} must be a relative path with '/' separators")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"{path!r} must be normalised: no empty, '.' or '..' components")
    if len(path) > 1024 or any(len(part) > 255 for part in parts):
        raise ValueError(f"{path!r} is too long")
    return path


def _check_content(content: str) -> str:
    size = len(content.encode("utf-8", "surrogatepass"))
    if size > MAX_FILE_BYTES:
        raise ValueError(f"content is {size} bytes; the limit is {MAX_FILE_BYTES}")
    return content


def _octal_mode(value: Any) -> Any:
    """Accept ``0644``/``"0o644"``/``"644"`` strings as octal; ints pass through."""
    if isinstance(value, str) and re.fullmatch(r"(0o?)?[0-7]{1,3}", value):
        return int(value.removeprefix("0o"), 8)
    return value


def _check_url_path(path: str) -> str:
    if not path.startswith("/") or any(ch.isspace() or ord(ch) < 32 for ch in path):
        raise ValueError(f"{path!r} must start with '/' and contain no spaces or controls")
    return path


def _artifact_name(value: str) -> str:
    return check_dns1123_label(value, max_length=63)


def _artifact_version(value: str) -> str:
    return check_version(value)


def _port_name(value: str) -> str:
    return check_dns1123_label(value, max_length=15)


Arg = Annotated[str, AfterValidator(_check_arg)]


def _check_command(command: list[str]) -> list[str]:
    if not command[0]:
        raise FieldValueError((0,), "the program must not be empty")
    return command


Command = Annotated[list[Arg], Field(min_length=1, max_length=256), AfterValidator(_check_command)]
EnvName = Annotated[str, AfterValidator(_check_env_name)]
FileMode = Annotated[int, BeforeValidator(_octal_mode), Field(ge=0, le=0o777)]


class SecretKeyRef(Model):
    """One value of a Secret."""

    name: Annotated[str, AfterValidator(check_dns1123_subdomain)] = Field(description="The Secret's name.")
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")] = Field(
        description="The key in the Secret's data."
    )


class EnvSource(Model):
    """Where an environment variable's value comes from instead of ``value``."""

    secret_ref: SecretKeyRef = Field(
        description="A value of a Secret (kept out of the Workload; viewers never see it; only nodes running the "
        "Workload receive the Secret)."
    )


class EnvVar(Model):
    """One environment variable."""

    name: EnvName = Field(description="Variable name, [A-Za-z_][A-Za-z0-9_]*.")
    value: Arg = Field(default="", description="Value; quote numbers and booleans in YAML.")
    value_from: EnvSource | None = Field(
        default=None, description="Take the value from a Secret: {secretRef: {name, key}}; value must then be empty."
    )

    @model_validator(mode="after")
    def _one_source(self) -> EnvVar:
        if self.value_from is not None and self.value:
            raise FieldValueError(("valueFrom",), "set value or valueFrom, not both")
        return self


class WorkloadFile(Model):
    """A file the agent writes into the workload's directory before starting it."""

    path: Annotated[str, AfterValidator(_check_relative_path)] = Field(
        description="Path relative to the workload's directory; no '..' components."
    )
    content: Annotated[str, AfterValidator(_check_content)] = Field(
        default="", description="UTF-8 text content, at most 1 MiB."
    )
    mode: FileMode = Field(
        default=0o644,
        description="Permission bits (0 to 0777, no setuid), an integer or an octal string such as '0644'.",
    )


class WorkloadArtifact(Model):
    """An Artifact the agent fetches (through the site's cache), verifies and installs before the process starts."""

    name: Annotated[str, AfterValidator(_artifact_name)] = Field(description="The Artifact's spec.name.")
    version: Annotated[str, AfterValidator(_artifact_version)] = Field(description="The Artifact's spec.version.")
    path: Annotated[str, AfterValidator(_check_relative_path)] = Field(
        description="Where it lands, relative to the workload's directory: the file (extract: none) or the "
        "directory it is unpacked into (extract: tar.gz); no '..' components."
    )
    extract: Literal["none", "tar.gz"] = Field(
        default="none", description="none: install the file as is; tar.gz: unpack it (safely) into path."
    )
    mode: FileMode = Field(default=0o644, description="Permission bits of the installed file (extract: none).")


class WorkloadPort(Model):
    """A port the process listens on."""

    name: Annotated[str, AfterValidator(_port_name)] = Field(
        description="Port name, a DNS label of at most 15 characters (e.g. http)."
    )
    port: Port = Field(description="Port number, 1-65535.")
    protocol: Literal["tcp", "udp"] = Field(default="tcp", description="tcp or udp.")


class ExecAction(Model):
    """A command run in the workload's directory and environment."""

    command: Command = Field(description="Program and arguments; no shell is involved.")


class HttpProbe(Model):
    """Healthy when GET returns a status from 200 to 399."""

    path: Annotated[str, AfterValidator(_check_url_path)] = Field(
        default="/", description="Request path, starting with '/'."
    )
    port: Port = Field(description="Port on the node's loopback address.")


class TcpProbe(Model):
    """Healthy when a TCP connection opens."""

    port: Port = Field(description="Port on the node's loopback address.")


class HealthProbe(Model):
    """How the agent checks the process; exactly one of http, tcp and exec."""

    http: HttpProbe | None = Field(default=None, description="Probe with an HTTP GET.")
    tcp: TcpProbe | None = Field(default=None, description="Probe by opening a TCP connection.")
    exec: ExecAction | None = Field(default=None, description="Probe by running a command; exit status 0 is healthy.")
    initial_delay_seconds: Seconds = Field(default=0, description="Seconds after start before the first probe.")
    period_seconds: PositiveSeconds = Field(default=10, description="Seconds between probes.")
    timeout_seconds: PositiveSeconds = Field(
        default=1, description="Seconds before a probe counts as failed; at most periodSeconds."
    )
    failure_threshold: int = Field(
        default=3, ge=1, le=100, description="Consecutive failures that make the process unready."
    )

    @model_validator(mode="after")
    def _one_probe(self) -> HealthProbe:
        if sum(probe is not None for probe in (self.http, self.tcp, self.exec)) != 1:
            raise ValueError("set exactly one of http, tcp or exec")
        if self.timeout_seconds > self.period_seconds:
            raise FieldValueError(("timeoutSeconds",), f"must not exceed periodSeconds ({self.period_seconds})")
        return self


class Hook(Model):
    """A command run at a point of the process's life."""

    exec: ExecAction = Field(description="The command to run.")
    timeout_seconds: PositiveSeconds = Field(
        default=30, description="Seconds before the hook is killed and counted as failed."
    )


def _env_from_map(value: Any) -> Any:
    """``{NAME: value}`` becomes ``[{name: NAME, value: value}]``, order kept."""
    if not isinstance(value, dict):
        return value
    for name, item in value.items():
        if not isinstance(item, str):
            raise ValueError(f"{name}: value must be a string (quote numbers and booleans in YAML)")
    return [{"name": name, "value": item} for name, item in value.items()]


_USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
MAX_UID = 2**32 - 2


def _user_text(value: Any) -> Any:
    """A numeric uid given as a YAML integer is stored as its decimal string."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _check_user(value: str | None) -> str | None:
    if value is None:
        return None
    if value.isdigit() and value.isascii():
        if int(value) > MAX_UID:
            raise ValueError(f"uid {value} is out of range (0-{MAX_UID})")
        return str(int(value))
    if not _USER_NAME.match(value):
        raise ValueError(f"{value!r} is not a user name ([a-z_][a-z0-9_-]*, at most 32 characters) or a uid")
    return value


def check_workload_user(value: str) -> str:
    """A user name or uid for ``runAsUser`` or ``edge run --workload-user``; ValueError otherwise."""
    checked = _check_user(_user_text(value))
    assert checked is not None
    return checked


BUILTINS = ("cache",)
"""Workloads the agent knows how to configure itself (``template.builtin``)."""


class WorkloadTemplate(Model):
    """What runs on each selected node."""

    builtin: Literal["cache"] | None = Field(
        default=None,
        description="A workload the agent configures itself. cache: the edgefleet cache server, whose cache.yaml "
        "the agent renders from the node's view and reloads with SIGHUP (no restart) when it changes; a leading "
        "'edgefleet' in command runs with the agent's Python and '--config cache.yaml' is appended. Ports 'http' "
        "(default 8081) and 'admin' (default 9081) and the probe use the node's first address.",
    )
    command: Command = Field(description="Program and its first arguments; no shell is involved.")
    run_as_user: Annotated[str | None, BeforeValidator(_user_text), AfterValidator(_check_user)] = Field(
        default=None,
        description="The user (name or numeric uid) the process, its hooks and exec probes run as, when the agent "
        "runs as root; unset: the agent's workload user (edgefleet edge run --workload-user, default "
        "edgefleet-workload, created if missing). 'root' runs it as root, which can read the node's credential. "
        "An agent not running as root runs workloads as its own user and refuses any other runAsUser. Not allowed "
        "with builtin (built-in workloads run as the agent's user).",
    )
    args: list[Arg] = Field(default_factory=list, max_length=256, description="Arguments appended to command.")
    env: Annotated[list[EnvVar], BeforeValidator(_env_from_map)] = Field(
        default_factory=list,
        max_length=512,
        description="Environment variables: a list of {name, value} or a map of name to value (stored as a list).",
    )
    files: list[WorkloadFile] = Field(
        default_factory=list, max_length=64, description="Files written before the process starts."
    )
    artifacts: list[WorkloadArtifact] = Field(
        default_factory=list,
        max_length=32,
        description="Artifacts installed into the workload's directory before the process starts, fetched "
        "through the node's site cache and verified by SHA-256 before the old revision stops.",
    )
    ports: list[WorkloadPort] = Field(default_factory=list, max_length=64, description="Ports the process listens on.")
    health_probe: HealthProbe | None = Field(
        default=None,
        description="How the agent decides the process is ready; none means ready once started.",
    )
    post_start: Hook | None = Field(
        default=None, description="Run after the process starts; failure restarts the process."
    )
    pre_stop: Hook | None = Field(
        default=None,
        description="Run before the process is signalled to stop, e.g. to "
        "drain traffic; counts against terminationGracePeriodSeconds.",
    )
    restart_policy: Literal["Always", "OnFailure", "Never"] = Field(
        default="Always", description="When the agent restarts the process after it exits."
    )
    termination_grace_period_seconds: int = Field(
        default=30,
        ge=0,
        le=3600,
        description="Seconds between SIGTERM and SIGKILL, preStop included.",
    )

    @field_validator("env")
    @classmethod
    def _unique_env(cls, env: list[EnvVar]) -> list[EnvVar]:
        check_unique_by(env, lambda item: item.name, "name", "environment variable")
        return env

    @field_validator("files")
    @classmethod
    def _unique_files(cls, files: list[WorkloadFile]) -> list[WorkloadFile]:
        check_unique_by(files, lambda item: item.path, "path", "file")
        return files

    @field_validator("artifacts")
    @classmethod
    def _unique_artifact_paths(cls, artifacts: list[WorkloadArtifact]) -> list[WorkloadArtifact]:
        check_unique_by(artifacts, lambda item: item.path, "path", "artifact")
        return artifacts

    @field_validator("ports")
    @classmethod
    def _unique_ports(cls, ports: list[WorkloadPort]) -> list[WorkloadPort]:
        check_unique_by(ports, lambda item: item.name, "name", "port name")
        check_unique_by(ports, lambda item: f"{item.port}/{item.protocol}", "port", "port")
        return ports

    @model_validator(mode="after")
    def _builtin_runs_as_the_agent(self) -> WorkloadTemplate:
        if self.builtin is not None and self.run_as_user is not None:
            raise FieldValueError(("runAsUser",), "built-in workloads run as the agent's user; leave runAsUser unset")
        return self

    def secret_refs(self) -> list[SecretKeyRef]:
        """The Secret values the environment references, in order."""
        return [var.value_from.secret_ref for var in self.env if var.value_from is not None]

    @model_validator(mode="after")
    def _pre_stop_fits(self) -> WorkloadTemplate:
        grace = self.termination_grace_period_seconds
        if self.pre_stop is not None and self.pre_stop.timeout_seconds > grace:
            raise FieldValueError(
                ("preStop", "timeoutSeconds"),
                f"must not exceed terminationGracePeriodSeconds ({grace})",
            )
        return self


class WorkloadSpec(Model):
    """Desired state of a Workload."""

    node_selector: SelectorText = Field(
        default="",
        description="Label selector over Node labels, e.g. 'edgefleet.io/role=cache'; empty selects every node.",
    )
    template: WorkloadTemplate = Field(description="The process each selected node runs.")
    revision_history_limit: int = Field(
        default=10,
        ge=0,
        le=100,
        description="Old template revisions (WorkloadRevision objects) kept for rollback and pins, besides the "
        "ones in use.",
    )
    strategy: RolloutStrategy = Field(
        default_factory=RolloutStrategy,
        description="How a template change reaches the nodes: batches, "
        "unavailability budgets, drains, verification (docs/rollouts.md).",
    )
    pins: list[VersionPin] = Field(
        default_factory=list,
        max_length=256,
        description="Host version map: nodes a selector picks run the given revision whatever rolls out; the "
        "first matching pin wins. `edgefleet rollout pin` edits it.",
    )
    paused: bool = Field(
        default=False, description="Hold the rollout: nodes on their way finish, no other node starts moving."
    )

    def selector(self) -> Selector:
        return parse_selector(self.node_selector)


class WorkloadStatus(Model):
    """Observed state of a Workload, written by the workload controller (see edgefleet.cloud.rollouts)."""

    observed_generation: int | None = Field(default=None, description="The metadata.generation this status describes.")
    current_revision: str | None = Field(
        default=None,
        description="The stable revision: every node not listed in nodeRevisions runs it.",
    )
    current_revision_number: int | None = Field(default=None, description="Its number (rollout history).")
    update_revision: str | None = Field(
        default=None, description="Revision of spec.template (see template_revision): where rollouts go."
    )
    update_revision_number: int | None = Field(default=None, description="Its number.")
    node_revisions: dict[str, str] | None = Field(
        default=None,
        description="Nodes assigned another revision than currentRevision (a rollout in "
        "progress, pins), by node name. The per-node view projects the assigned revision's template.",
    )
    desired_count: Count | None = Field(default=None, description="Nodes the selector picks.")
    updated_count: Count | None = Field(default=None, description="Nodes running updateRevision.")
    ready_count: Count | None = Field(default=None, description="Instances that are ready.")
    available_count: Count | None = Field(
        default=None, description="Ready instances on Ready nodes that are not drained."
    )
    unavailable_count: Count | None = Field(default=None, description="desiredCount - availableCount.")
    sites: dict[str, SiteCounts] | None = Field(default=None, description="The same counts per site.")
    conditions: list[Condition] | None = Field(
        default=None, description="Available, Progressing, Paused: with reasons."
    )
    rollout: RolloutState | None = Field(default=None, description="The rollout in progress, or the last one.")


class Workload(Resource):
    """A supervised process run on every node its selector picks."""

    KIND: ClassVar[str] = "Workload"
    kind: Literal["Workload"] = "Workload"
    spec: WorkloadSpec
    status: WorkloadStatus = Field(default_factory=WorkloadStatus)


def template_revision(template: WorkloadTemplate) -> str:
    """A short stable hash of the template's canonical JSON form."""
    document = template.model_dump(mode="json", by_alias=True)
    # Fields added after templates were deployed are left out when unset, so an agent upgrade
    # does not see a new revision (and restart) for every existing workload.
    for late in ("builtin", "runAsUser"):
        if document.get(late) is None:
            del document[late]
    if not document.get("artifacts"):
        del document["artifacts"]
    for var in document["env"]:
        if var.get("valueFrom") is None:
            del var["valueFrom"]
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _workload(obj: Resource) -> Workload:
    assert isinstance(obj, Workload)
    return obj


def _ready(obj: Resource) -> str:
    status = _workload(obj).status
    if status.ready_count is None and status.desired_count is None:
        return "<none>"
    return f"{cell(status.ready_count)}/{cell(status.desired_count)}"


def _command(obj: Resource) -> str:
    template = _workload(obj).spec.template
    line = " ".join([*template.command, *template.args])
    return line if len(line) <= 48 else line[:45] + "..."


def _ports(obj: Resource) -> str:
    ports = _workload(obj).spec.template.ports
    return cell([f"{p.name}:{p.port}/{p.protocol}" for p in ports])


def _revision(obj: Resource) -> str:
    status = _workload(obj).status
    current, update = status.current_revision_number, status.update_revision_number
    if current is None:
        return "<none>"
    return str(current) if update in (None, current) else f"{current}->{update}"


def _rollout(obj: Resource) -> str:
    rollout = _workload(obj).status.rollout
    return "<none>" if rollout is None else rollout.phase


INFO = register(
    KindInfo(
        kind="Workload",
        plural="workloads",
        model=Workload,
        short_names=("wl",),
        description="A supervised process (the cache server first) run on selected nodes.",
        columns=(
            Column("SELECTOR", lambda o: _workload(o).spec.node_selector or "<all>"),
            Column("READY", _ready),
            Column("UP-TO-DATE", lambda o: cell(_workload(o).status.updated_count)),
            Column("AVAILABLE", lambda o: cell(_workload(o).status.available_count)),
            Column("REVISION", _revision),
            Column("ROLLOUT", _rollout),
            Column("COMMAND", _command, wide=True),
            Column("PORTS", _ports, wide=True),
            Column("RESTART", lambda o: _workload(o).spec.template.restart_policy, wide=True),
        ),
    )
)
