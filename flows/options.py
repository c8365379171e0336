"""Command-line options generated from a flow's parameters model (one --option per field, never stale)."""

from __future__ import annotations

import argparse
import json
import typing
from typing import Any


def _is_simple_list(annotation) -> bool:
    return typing.get_origin(annotation) is list and typing.get_args(annotation) in ((str,), (int,))


def add_param_options(parser: argparse.ArgumentParser, model=None, *, skip: tuple[str, ...] = ("preset",)) -> None:
    """One --option per field of a parameters model (default CaseStudyParams), with its description and default
    (generated, never stale)."""
    from flows.params import CaseStudyParams

    for name, field in (model or CaseStudyParams).model_fields.items():
        if name in skip:
            continue
        flag = "--" + name.replace("_", "-")
        default = field.get_default(call_default_factory=True)
        shown = default.model_dump() if hasattr(default, "model_dump") else default
        text = f"{field.description or ''} [default: {json.dumps(shown, default=str)}]"
        ann = field.annotation
        if ann is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif _is_simple_list(ann):
            parser.add_argument(flag, dest=name, default=None, metavar="A,B,...", help=text + " (comma-separated)")
        elif typing.get_origin(ann) in (dict, None) and hasattr(ann, "model_fields") or typing.get_origin(ann) is dict:
            parser.add_argument(flag, dest=name, default=None, metavar="JSON", help=text + " (JSON)")
        else:
            parser.add_argument(flag, dest=name, default=None, help=text)


def overrides_from(args: argparse.Namespace, model=None, *, skip: tuple[str, ...] = ("preset",)) -> dict[str, Any]:
    """Parsed options -> field overrides (only those given)."""
    from flows.params import CaseStudyParams

    out: dict[str, Any] = {}
    for name, field in (model or CaseStudyParams).model_fields.items():
        value = getattr(args, name, None)
        if value is None or name in skip:
            continue
        ann = field.annotation
        if _is_simple_list(ann):
            value = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, str) and (typing.get_origin(ann) is dict or hasattr(ann, "model_fields")):
            value = json.loads(value)
        out[name] = value
    return out
