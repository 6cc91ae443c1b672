"""The one place that knows the supported Airflow minors differ (3.1, 3.2, 3.3).

Nothing else in the package checks Airflow's version. What differs:

- ``AirflowFailException`` (fail the task now, no retries) lives in ``airflow.sdk.exceptions``
  from Airflow 3.2 on and in ``airflow.exceptions`` in 3.1: :func:`airflow_fail_exception`.
- Connection forms: from 3.2 on the UI reads the fields statically from the provider info
  (``conn-fields`` / ``ui-field-behaviour``, declared once in :mod:`airflow_secure_transfer`);
  3.1 imports the hooks and calls their ``get_connection_form_widgets`` /
  ``get_ui_field_behaviour`` classmethods. :func:`connection_form_widgets` and
  :func:`ui_field_behaviour` derive what those return from the same declaration, so the two
  forms cannot disagree. 3.1's form has fewer kinds of field: a multi-line text is a one-line
  input there (pasted PEM/OpenSSH blocks get their line breaks back in the policy), a number is
  a text input (numeric strings are accepted), and a select shows the raw values (with no "null" choice:
  an empty select means "not set").

Every import of Airflow, wtforms or Flask-AppBuilder happens inside a function: importing this
module costs nothing at DAG-parse time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "airflow_fail_exception",
    "connection_form_widgets",
    "default_deferrable",
    "form_field_kind",
    "ui_field_behaviour",
]


def airflow_fail_exception() -> type[Exception]:
    """Return the installed Airflow's ``AirflowFailException``: raising it fails the task without retries."""
    try:
        from airflow.sdk.exceptions import AirflowFailException  # Airflow 3.2+
    except ImportError:  # Airflow 3.1: the task runner catches the core class
        from airflow.exceptions import AirflowFailException  # type: ignore[no-redef,attr-defined,unused-ignore]
    exc: type[Exception] = AirflowFailException
    return exc


def default_deferrable() -> bool:
    """Return Airflow's ``[operators] default_deferrable`` (False when unset).

    ``airflow.sdk.conf`` where the SDK has it, else the core ``airflow.configuration.conf``.
    """
    try:
        from airflow.sdk import conf
    except ImportError:  # pragma: no cover - an SDK without conf
        from airflow.configuration import conf  # type: ignore[no-redef,attr-defined,assignment,unused-ignore]
    return bool(conf.getboolean("operators", "default_deferrable", fallback=False))


def _types(schema: Mapping[str, Any]) -> set[str]:
    declared = schema.get("type", "string")
    return {declared} if isinstance(declared, str) else set(declared)


def form_field_kind(schema: Mapping[str, Any]) -> str:
    """Name the Airflow 3.1 form field class a ``conn-fields`` schema becomes.

    ``integer`` -> ``IntegerField``; ``format: password`` -> ``PasswordField``; everything else
    (strings, numbers, multi-line text) -> ``StringField``: 3.1's form has no decimal or
    multi-line field class.
    """
    if _types(schema) - {"null"} == {"integer"}:
        return "IntegerField"
    if schema.get("format") == "password":
        return "PasswordField"
    return "StringField"


def _form_default(schema: Mapping[str, Any]) -> Any:
    default = schema.get("default")
    if default is not None and form_field_kind(schema) == "StringField" and not isinstance(default, str):
        return str(default)  # a number shown in a text input (3.1 has no decimal field)
    return default


def connection_form_widgets(conn_fields: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Build the Airflow 3.1 connection form widgets from a ``conn-fields`` declaration.

    wtforms and Flask-AppBuilder are imported here, when the 3.1 providers manager or UI asks
    (the 3.1 API server substitutes its own stand-ins for them; a worker never calls this).

    :param conn_fields: ``{extra name: {label, description, schema}}`` as in the provider info.
    :return: ``{extra name: unbound wtforms field}`` as ``get_connection_form_widgets`` returns.
    """
    from flask_appbuilder.fieldwidgets import BS3PasswordFieldWidget, BS3TextAreaFieldWidget, BS3TextFieldWidget
    from flask_babel import lazy_gettext
    from wtforms import IntegerField, PasswordField, StringField
    from wtforms.validators import Optional, any_of

    classes = {"StringField": StringField, "IntegerField": IntegerField, "PasswordField": PasswordField}
    widgets: dict[str, Any] = {}
    for name, spec in conn_fields.items():
        schema = spec["schema"]
        kind = form_field_kind(schema)
        validators: list[Any] = [Optional()]
        if "enum" in schema:
            # 3.1 has no values_display to label a None choice: it would show the word "null". Without it a
            # cleared select shows its placeholder, and the field stays optional (nullable).
            validators.append(any_of([value for value in schema["enum"] if value is not None]))
        if kind == "PasswordField":
            widget = BS3PasswordFieldWidget()
        elif kind == "StringField" and schema.get("format") == "multiline":
            widget = BS3TextAreaFieldWidget()
        else:
            widget = BS3TextFieldWidget()
        widgets[name] = classes[kind](
            lazy_gettext(spec["label"]),
            validators=validators,
            description=spec.get("description", ""),
            default=_form_default(schema),
            widget=widget,
        )
    return widgets


def ui_field_behaviour(declared: Mapping[str, Any]) -> dict[str, Any]:
    """Turn a provider info ``ui-field-behaviour`` (dashed keys) into ``get_ui_field_behaviour``'s dict."""
    return {key.replace("-", "_"): value for key, value in declared.items()}
