"""params.yaml -> a frozen :class:`Spec`: the sections, validated, with file:line:key errors.

``reader`` turns the YAML into nodes with line numbers (merge keys, duplicate keys, alias
bombs rejected); ``model`` holds the Spec's types; ``parse`` walks the documents,
``sections`` reads the first one (templates, defaults, aliases, resource, slurm, env,
notify; ``durations``: ``timeout:`` and durations),
``grids`` the others, ``values`` a param's value in each form of the sweep grammar (lists,
generators, distributions, conditional sub-grids) and ``generators`` their arithmetic.
"""

from mlrunner.spec.durations import ALL_COMMANDS, format_duration, parse_duration, timeout_of
from mlrunner.spec.generators import Dist, Gen, round12
from mlrunner.spec.model import (
    ATTEMPT_TEXT,
    CPU_SLOT_PREFIX,
    NOTIFY_EVENTS,
    ORDERS,
    PLACEHOLDER_RE,
    RESERVED_PARAMS,
    SLURM_KEYS,
    Axis,
    Combination,
    Grid,
    Match,
    NotifySpec,
    ResourceSpec,
    Spec,
    SubGrid,
    choice_key,
    fold_template,
    parse_memory_mib,
    template_fields,
)
from mlrunner.spec.parse import load_spec, parse_spec
from mlrunner.spec.reader import Value, count_text
from mlrunner.spec.sections import parse_resource_option

__all__ = [
    "ALL_COMMANDS",
    "ATTEMPT_TEXT",
    "CPU_SLOT_PREFIX",
    "NOTIFY_EVENTS",
    "ORDERS",
    "PLACEHOLDER_RE",
    "RESERVED_PARAMS",
    "SLURM_KEYS",
    "Axis",
    "Combination",
    "Dist",
    "Gen",
    "Grid",
    "Match",
    "NotifySpec",
    "ResourceSpec",
    "Spec",
    "SubGrid",
    "Value",
    "choice_key",
    "count_text",
    "fold_template",
    "format_duration",
    "load_spec",
    "parse_duration",
    "parse_memory_mib",
    "parse_resource_option",
    "parse_spec",
    "round12",
    "timeout_of",
    "template_fields",
]
