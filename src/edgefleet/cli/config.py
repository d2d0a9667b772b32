"""Where the CLI finds its server and token: flags, environment, config file.

How (kubectl's order): ``--server``/``--token`` flags win, then
``EDGEFLEET_SERVER``/``EDGEFLEET_TOKEN``, then the current (or ``--context``)
context of the config file ``$EDGEFLEET_CONFIG`` or
``~/.config/edgefleet/config.yaml``:

.. code-block:: yaml

    current-context: lab
    contexts:
      - name: lab
        server: https://127.0.0.1:7440
        token: abc123.0123456789abcdef0123456789abcdef
        certificate-authority: /home/me/edgefleet-up/tls/ca.crt

The file holds secrets, so it is written with mode 0600.

TLS (:class:`~edgefleet.tls.ClientTrust`): the CA the server's certificate
must chain to is ``EDGEFLEET_CA_FILE``, else the context's
``certificate-authority`` when the server is the context's, else the
system's CAs. A cleartext ``http://`` server is refused unless
``EDGEFLEET_INSECURE=1`` or the context says ``insecure: true``
(``edgefleet config set-context NAME --insecure``): the token would cross
the network in the clear.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgefleet.tls import ClientTrust, TlsError

DEFAULT_SERVER = "https://127.0.0.1:7440"
INSECURE_HOW = "EDGEFLEET_INSECURE=1 (or `edgefleet config set-context NAME --server URL --insecure`)"


class ConfigError(Exception):
    """The config file is unreadable or names a context that does not exist."""


@dataclass(frozen=True, slots=True)
class Connection:
    server: str
    token: str | None
    source: str
    trust: ClientTrust = field(default_factory=ClientTrust)


def config_path() -> Path:
    override = os.environ.get("EDGEFLEET_CONFIG")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "edgefleet" / "config.yaml"


def load_config(path: Path | None = None) -> dict[str, Any]:
    path = path or config_path()
    if not path.exists():
        return {"contexts": []}
    import yaml  # here: a command run on flags and environment variables alone never loads it

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}; fix or delete the file") from None
    if not isinstance(data, dict) or not isinstance(data.get("contexts", []), list):
        raise ConfigError(f"{path}: expected a mapping with a 'contexts' list")
    data.setdefault("contexts", [])
    return data


def save_config(data: dict[str, Any], path: Path | None = None) -> Path:
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    import yaml

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(data, handle, sort_keys=False)
    return path


def find_context(data: dict[str, Any], name: str) -> dict[str, Any] | None:
    for context in data["contexts"]:
        if isinstance(context, dict) and context.get("name") == name:
            return context
    return None


def set_context(
    data: dict[str, Any],
    name: str,
    server: str,
    token: str | None,
    *,
    ca_file: Path | None = None,
    insecure: bool | None = None,
) -> None:
    context = find_context(data, name)
    if context is None:
        context = {"name": name}
        data["contexts"].append(context)
    context["server"] = server
    if token is not None:
        context["token"] = token
    if ca_file is not None:
        context["certificate-authority"] = str(ca_file.absolute())
    if insecure is not None:
        context.pop("insecure", None)
        if insecure:
            context["insecure"] = True


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def trust_for(server: str, context: dict[str, Any]) -> ClientTrust:
    """The CA and cleartext rule for ``server`` (see the module docstring); ConfigError refusing cleartext."""
    own = str(context.get("server", "")).rstrip("/") == server
    ca = os.environ.get("EDGEFLEET_CA_FILE") or (context.get("certificate-authority") if own else None)
    trust = ClientTrust(
        Path(str(ca)) if ca else None, env_flag("EDGEFLEET_INSECURE") or (own and context.get("insecure") is True)
    )
    try:
        trust.check_url(server, how=INSECURE_HOW)
    except TlsError as exc:
        raise ConfigError(str(exc)) from None
    return trust


def resolve(server: str | None, token: str | None, context_name: str | None) -> Connection:
    """Apply the precedence rules; see the module docstring."""
    data = load_config()
    name = context_name or data.get("current-context")
    context: dict[str, Any] = {}
    if name:
        found = find_context(data, name)
        if found is None and context_name:
            raise ConfigError(f"no context {name!r} in {config_path()}; list them with `edgefleet config get-contexts`")
        context = found or {}
    env_server, env_token = os.environ.get("EDGEFLEET_SERVER"), os.environ.get("EDGEFLEET_TOKEN")
    chosen_server = server or env_server or context.get("server") or DEFAULT_SERVER
    chosen_token = token or env_token or context.get("token")
    source = "flag" if server else "EDGEFLEET_SERVER" if env_server else f"context {name}" if context else "default"
    url = str(chosen_server).rstrip("/")
    return Connection(url, chosen_token, source, trust_for(url, context))
