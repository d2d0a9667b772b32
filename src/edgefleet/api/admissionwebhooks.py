"""AdmissionWebhook: an HTTP service the cloud asks before it stores a write (validating admission).

How: ``spec.url`` is where the cloud POSTs, for every API write that one of
``spec.rules`` matches (a kind and an operation: ``CREATE``, ``UPDATE``,
``DELETE``; ``"*"`` matches any), the JSON ``{operation, kind, name,
object, oldObject, uid}`` and expects ``{allowed: bool, message?: str,
warnings?: [str]}`` back within ``spec.timeoutSeconds``. ``allowed: false``
refuses the write with the webhook's message; warnings reach the client
(``edgefleet apply`` prints them). When the webhook cannot answer (down,
slow, garbage), ``spec.failurePolicy`` decides: ``Fail`` refuses the write,
``Ignore`` lets it through. The calls themselves are made by
:mod:`edgefleet.cloud.admission`; this module only describes and checks the
configuration, like the Kubernetes ValidatingWebhookConfiguration it is
modelled on (one webhook per object, cluster-scoped as every kind is).

Never sent to webhooks (so rules cannot name them): writes of ``status``,
which components report rather than people decide; Events and Hubs, the
cloud's own bookkeeping, which must keep working while a webhook is down;
and AdmissionWebhooks themselves, so that a broken webhook with
``failurePolicy: Fail`` can always be fixed or deleted.

An AdmissionWebhook has no status.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field, model_validator

from edgefleet.api.common import CaBundle, cell, check_https_for_ca_bundle
from edgefleet.api.domains import check_origin_url
from edgefleet.api.errors import UnknownKind
from edgefleet.api.meta import Column, KindInfo, Model, Resource, kind_info, register

KIND = "AdmissionWebhook"
DEFAULT_TIMEOUT_SECONDS = 10
MAX_TIMEOUT_SECONDS = 30
MAX_RULES = 16

EXEMPT_KINDS = frozenset({"Event", "Hub", KIND})
"""Kinds whose writes are never sent to webhooks (see the module docstring)."""

Operation = Literal["CREATE", "UPDATE", "DELETE", "*"]


def check_webhook_kind(kind: str) -> str:
    """A served kind that webhooks may see, or ``*``."""
    if kind == "*":
        return kind
    if kind in EXEMPT_KINDS:
        raise ValueError(f"{kind} writes are never sent to admission webhooks; leave it out")
    try:
        kind_info(kind)
    except UnknownKind as exc:
        raise ValueError(f"{exc} (or '*' for all)") from None
    return kind


WebhookKind = Annotated[str, Field(min_length=1, max_length=63), AfterValidator(check_webhook_kind)]
WebhookUrl = Annotated[str, Field(max_length=2048), AfterValidator(check_origin_url)]


class WebhookRule(Model):
    """Which writes a webhook is asked about: any of ``kinds`` with any of ``operations``."""

    kinds: list[WebhookKind] = Field(
        min_length=1,
        max_length=64,
        description="Kinds as in manifests (Workload, Node...), or '*' for all.",
    )
    operations: list[Operation] = Field(
        min_length=1,
        max_length=4,
        description="CREATE, UPDATE (PUT and PATCH), DELETE, or '*' for all three.",
    )

    def matches(self, kind: str, operation: str) -> bool:
        return ("*" in self.kinds or kind in self.kinds) and ("*" in self.operations or operation in self.operations)


class AdmissionWebhookSpec(Model):
    """Where the webhook runs, what it is asked about, and what happens when it cannot answer."""

    url: WebhookUrl = Field(
        description="http(s) URL the cloud POSTs each matching write to (no credentials, query or fragment).",
    )
    rules: list[WebhookRule] = Field(
        min_length=1,
        max_length=MAX_RULES,
        description="The writes it is asked about; any matching rule counts.",
    )
    timeout_seconds: int = Field(
        default=DEFAULT_TIMEOUT_SECONDS,
        ge=1,
        le=MAX_TIMEOUT_SECONDS,
        description="Seconds the whole call (connect, send, answer) may take; a slower webhook counts as failed.",
    )
    failure_policy: Literal["Fail", "Ignore"] = Field(
        default="Fail",
        description="When the webhook cannot answer (down, slow, invalid answer): Fail refuses the write, "
        "Ignore lets it through with a warning.",
    )
    ca_bundle: CaBundle | None = Field(
        default=None,
        description="PEM CA certificates that sign the webhook's https certificate, trusted instead of the "
        "system CAs (a webhook behind a private or self-signed CA).",
    )

    @model_validator(mode="after")
    def _https_for_ca_bundle(self) -> AdmissionWebhookSpec:
        check_https_for_ca_bundle(self.url, self.ca_bundle)
        return self

    def matches(self, kind: str, operation: str) -> bool:
        return kind not in EXEMPT_KINDS and any(rule.matches(kind, operation) for rule in self.rules)


class AdmissionWebhook(Resource):
    """A validating admission webhook: an HTTP service that may refuse API writes."""

    KIND: ClassVar[str] = KIND
    kind: Literal["AdmissionWebhook"] = "AdmissionWebhook"
    spec: AdmissionWebhookSpec
    status: None = Field(default=None, description="An AdmissionWebhook has no status.")


def _spec(obj: Resource) -> AdmissionWebhookSpec:
    assert isinstance(obj, AdmissionWebhook)
    return obj.spec


def _rules(obj: Resource) -> str:
    return "; ".join(f"{cell(rule.kinds)}:{cell(rule.operations)}" for rule in _spec(obj).rules)


INFO = register(
    KindInfo(
        kind=KIND,
        plural="admissionwebhooks",
        model=AdmissionWebhook,
        short_names=("awh",),
        description="A validating admission webhook: the cloud asks it before storing the writes its rules match.",
        columns=(
            Column("URL", lambda o: _spec(o).url),
            Column("RULES", _rules),
            Column("FAILURE-POLICY", lambda o: _spec(o).failure_policy),
            Column("TIMEOUT", lambda o: f"{_spec(o).timeout_seconds}s", wide=True),
        ),
    )
)
