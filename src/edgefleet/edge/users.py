"""Which user a workload runs as: the isolation of workloads from the agent and from each other.

How: :class:`UserPolicy` decides, per template, the :class:`Account` (uid,
gid, name) its process, hooks and exec probes run as; the supervisor passes
it to :func:`edgefleet.edge.processes.spawn`, which switches to it in the
child between ``fork`` and ``exec`` (``setgroups([])``, ``setgid``,
``setuid``) and gives the working directory to it.

- **Agent runs as root** (:meth:`UserPolicy.for_agent` with ``os.geteuid()
  == 0``): a template's ``runAsUser`` (name or uid) is used; without one,
  the policy's default user (``edgefleet edge run --workload-user``, default
  :data:`DEFAULT_WORKLOAD_USER`), created as a system user without a home
  or login shell (``useradd --system``) the first time it is needed. Built-in
  workloads (the cache server) run as the agent's user: they are edgefleet's
  own code, run from the agent's Python, and read the agent's data
  directory. ``runAsUser: root`` (or 0) is honoured: the operator asked.
- **Agent does not run as root**: it cannot switch users. Workloads run as
  the agent's own user (a ``runAsUser`` naming that very user is fine); any
  other ``runAsUser`` fails the start with a status message saying so.
  There is no isolation between such workloads and the agent: the same uid
  may read the agent's files and ptrace its processes. Run the agent as
  root, or give each node's agent a user of its own and nothing else on it.

What the isolation rests on (see ``docs/security.md``): the node credential,
the view store (which holds the Secrets of the node's workloads) and the
supervisor's state are files of the agent's user with mode 0600 in
directories of mode 0700 (or 0711: searchable, not listable) that the
workload's user does not own; the working directory of a workload is owned
by its user (mode 0700) and its process starts inside it, so it needs no
right on the directories above. Workloads that share a user share its
rights: give workloads that must not read each other's files distinct
``runAsUser`` values.

Why ``useradd`` and not a fixed uid: a uid without a passwd entry shows up
as a number in ``ps`` and may collide with a user created later; a named
system user is what packages do (``nobody`` is shared by too many daemons
to be a good default, but may be configured).
"""

from __future__ import annotations

import logging
import os
import pwd
import subprocess
import threading
import time
from dataclasses import dataclass

from edgefleet.api.workloads import WorkloadTemplate

log = logging.getLogger(__name__)

DEFAULT_WORKLOAD_USER = "edgefleet-workload"
USERADD_TIME_LIMIT = 30.0
USERADD_ATTEMPTS = 5
"""useradd fails while another process holds the passwd lock: retried this many times."""

_create_lock = threading.Lock()


class UserError(Exception):
    """The workload's user cannot be used (unknown, cannot be created, not allowed); the message says why."""


@dataclass(frozen=True, slots=True)
class Account:
    """A user to run a process as."""

    uid: int
    gid: int
    name: str


def agent_account() -> Account:
    """The agent's own user."""
    uid, gid = os.geteuid(), os.getegid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    return Account(uid, gid, name)


def lookup(user: str) -> Account | None:
    """The account of a user name or numeric uid; None for an unknown name.

    A numeric uid without a passwd entry is used as is, with the group of the
    same number.
    """
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        return Account(int(user), int(user), user) if user.isdigit() else None
    return Account(entry.pw_uid, entry.pw_gid, entry.pw_name)


def ensure_system_user(name: str) -> Account:
    """The account of ``name``, created (``useradd --system``, no home, no login) if missing (blocking)."""
    with _create_lock:
        for attempt in range(USERADD_ATTEMPTS):
            account = lookup(name)
            if account is not None:
                return account
            error = _useradd(name)
            if error is None:
                break
            time.sleep(0.2 * (attempt + 1))  # another process may hold the passwd lock or create it now
        else:
            account = lookup(name)
            if account is None:
                raise UserError(f"cannot create the workload user {name!r}: {error}")
            return account
    account = lookup(name)
    if account is None:
        raise UserError(f"useradd created no user {name!r}")
    log.warning("created the system user %s (uid %d) to run workloads as", name, account.uid)
    return account


def _useradd(name: str) -> str | None:
    """Run useradd; None on success, else why it failed."""
    argv = ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
            "--shell", "/usr/sbin/nologin", "--comment", "edgefleet workloads", name]  # fmt: skip
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=USERADD_TIME_LIMIT, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    return None if done.returncode == 0 else (done.stderr.strip() or f"useradd exited with {done.returncode}")


@dataclass(frozen=True, slots=True)
class UserPolicy:
    """Which account each workload runs as; see the module docstring.

    ``switch`` is False when the agent cannot switch users (not root):
    every workload then runs as ``agent``.
    """

    agent: Account
    switch: bool
    default_user: str = DEFAULT_WORKLOAD_USER

    @classmethod
    def for_agent(cls, default_user: str = DEFAULT_WORKLOAD_USER) -> UserPolicy:
        """The policy of this process: switch users when running as root."""
        return cls(agent_account(), os.geteuid() == 0, default_user)

    def account(self, template: WorkloadTemplate) -> Account | None:
        """The account to switch to, or None to run as the agent's user (blocking: may create a user).

        Raises :class:`UserError` when the template's user cannot be used.
        """
        wanted = template.run_as_user
        if not self.switch:
            if wanted is None or wanted in (self.agent.name, str(self.agent.uid)):
                return None
            raise UserError(
                f"runAsUser {wanted!r} needs an agent running as root; this agent runs as "
                f"{self.agent.name} (uid {self.agent.uid}), so its workloads run as that user"
            )
        if template.builtin is not None:
            return None
        if wanted is None:
            return ensure_system_user(self.default_user)
        account = lookup(wanted)
        if account is None:
            raise UserError(f"runAsUser {wanted!r}: no such user on this node")
        return account
