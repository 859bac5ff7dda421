"""params.yaml -> a frozen :class:`Spec`: the sections, validated, with file:line:key errors.

``reader`` turns the YAML into nodes with line numbers (merge keys, duplicate keys
rejected); ``model`` holds the Spec's types; ``parse`` walks the documents, ``sections``
reads the first one (templates, defaults, aliases, resource, slurm), ``grids`` the others.
"""

from mlrunner.spec.model import (
    PLACEHOLDER_RE,
    RESERVED_PARAMS,
    SLURM_KEYS,
    Grid,
    ResourceSpec,
    Spec,
    choice_key,
    fold_template,
    parse_memory_mib,
    template_fields,
)
from mlrunner.spec.parse import load_spec, parse_spec
from mlrunner.spec.reader import Value
from mlrunner.spec.sections import parse_resource_option

__all__ = [
    "PLACEHOLDER_RE",
    "RESERVED_PARAMS",
    "SLURM_KEYS",
    "Grid",
    "ResourceSpec",
    "Spec",
    "Value",
    "choice_key",
    "fold_template",
    "load_spec",
    "parse_memory_mib",
    "parse_resource_option",
    "parse_spec",
    "template_fields",
]
