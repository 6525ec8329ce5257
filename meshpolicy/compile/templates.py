"""Jinja2 rendering for targets, with every value escaped.

Templates must pass every value through the `j` filter, which writes it as
a JSON scalar (or flow collection). JSON is valid YAML, so a service named
`a: b` or "x\n- y" can never inject structure into the output. Characters
YAML 1.1 readers break or refuse (NEL, U+2028, C1 controls...) are escaped
(compile/json_escape.py).
"""

from __future__ import annotations

import json
from functools import lru_cache

import jinja2

from ..resources import target_dir
from .json_escape import yaml_safe


def to_json_scalar(value) -> str:
    return yaml_safe(json.dumps(value, ensure_ascii=False, sort_keys=True))


@lru_cache(maxsize=None)
def environment(target: str) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(target_dir(target))),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["j"] = to_json_scalar
    return env


def render(target: str, template: str, **context) -> str:
    return environment(target).get_template(template).render(**context)
