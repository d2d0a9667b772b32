"""Plain coercion for plain ``str`` and ``bool`` parameters, so that a command need not import pydantic.

Why: typer (0.2x) coerces every parameter's value through a pydantic
``TypeAdapter`` built on first use, even a ``--server`` left unset or the
``--help`` flag, so every command imported pydantic: half the time of
``edgefleet version --client``. A string from the command line needs no
coercion, and a flag only the words click accepts. Parameters of other
types (numbers with bounds, paths, lists, choices) keep typer's coercion.

How: :func:`plain_params` gives such parameters of a click command (and of
its subcommands) a :class:`PlainParam` before they are parsed. This reaches
into typer's internals (``type_descriptor``, ``_runtime_param``,
``typer._coercion.RuntimeParam``); if they change, it does nothing and
tests/cli/test_startup.py, which checks that ``version --client`` imports
no pydantic, fails.
"""

from __future__ import annotations

from typing import Any

import typer

try:
    from typer._coercion import RuntimeParam

    ACTIVE = True
except ImportError:  # pragma: no cover - an older typer coerces with click, without pydantic
    RuntimeParam = object  # type: ignore[assignment,misc]
    ACTIVE = False

FLAG_WORDS = {
    **dict.fromkeys(("1", "true", "t", "yes", "y", "on"), True),
    **dict.fromkeys(("0", "false", "f", "no", "n", "off", ""), False),
}
"""What a boolean parameter given as text (an environment variable) may say."""


def coerce_plain(annotation: type, value: object) -> object:
    """``value`` as a ``str`` or ``bool``; :class:`typer.BadParameter` if it is not one."""
    if isinstance(value, annotation):
        return value
    if annotation is bool and isinstance(value, str) and value.strip().lower() in FLAG_WORDS:
        return FLAG_WORDS[value.strip().lower()]
    raise typer.BadParameter(f"{value!r} is not a valid {annotation.__name__}")


class PlainParam(RuntimeParam):
    """typer's coercion contract, for ``str`` and ``bool`` without pydantic (None is handled before)."""

    def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
        try:
            return coerce_plain(self.annotation, value)
        except typer.BadParameter as exc:
            raise typer.BadParameter(exc.message, ctx=ctx, param=param) from None


def plain_params(command: Any, ctx: Any) -> Any:
    """Give ``command``'s plain ``str``/``bool`` parameters, its ``--help`` and its subcommands' a :class:`PlainParam`.

    ``ctx``: a context for creating the ``--help`` option (click creates it on first use).
    """
    if not ACTIVE:  # pragma: no cover
        return command
    help_option = command.get_help_option(ctx)
    for param in [*command.params, *([help_option] if help_option is not None else [])]:
        descriptor: Any = getattr(param, "type_descriptor", None)
        if descriptor is None or descriptor.annotation not in (str, bool) or descriptor.parameter_info.parser:
            continue
        param._runtime_param = PlainParam(parameter_info=descriptor.parameter_info, annotation=descriptor.annotation)
    for sub in getattr(command, "commands", {}).values():
        plain_params(sub, ctx)
    return command
