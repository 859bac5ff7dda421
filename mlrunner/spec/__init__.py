"""params.yaml -> a frozen :class:`Spec`: the sections, validated, with file:line:key errors.

``reader`` turns the YAML into nodes with line numbers (merge keys, duplicate keys
rejected); ``model`` builds and validates the Spec from them.
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
    load_spec,
    parse_memory_mib,
    parse_resource_option,
    parse_spec,
    template_fields,
)
from mlrunner.spec.reader import Value

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
