"""Options declared once: a config dataclass field carries its flag, help, choices and bounds (field metadata).

The command line's options (`add_options`), the dashboard's New-run widgets (`option_fields`), the checks
(`validate`) and the reading of values back into a config (`apply`) are all generated from those fields,
in the spirit of transformers' HfArgumentParser. Nothing heavy is imported: `multimem --help` stays instant.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass, replace
from typing import Any, Callable, Iterator

_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


@dataclass(frozen=True)
class Option:
    flag: str                              # --image-tower
    help: str
    choices: tuple | None = None           # allowed values (argparse choices, a select box on New run)
    min: float | None = None               # bounds, checked by `validate` (and the New-run widgets')
    max: float | None = None
    label: str | None = None               # the New-run page's words; None: not on the page
    aliases: tuple[str, ...] = ()          # other spellings of the flag
    negate: bool = False                   # a store-true flag that sets the field False (--quiet, --no-projection)
    csv: bool = False                      # a comma-separated list on the command line
    group: str = "options"                 # the --help section
    step: float | None = None              # the New-run widget's step
    suggestions: tuple = ()                # values the New-run page offers where any value is allowed

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


def option(default: Any = MISSING, *, default_factory: Callable | Any = MISSING, **kw) -> Any:
    """A dataclass field that is also a command-line option (see Option for the keywords)."""
    meta = {"option": Option(**kw)}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class OptionField:
    path: tuple[str, ...]   # field names from the root config down to this field
    field: Field
    option: Option
    default: Any
    type: type

    @property
    def dest(self) -> str:
        return self.option.dest


def _field_type(f: Field, default: Any) -> type:
    name = str(f.type).replace("typing.", "").split("|")[0].split("[")[0].strip()
    return _TYPES.get(name, type(default) if default is not None else str)


def _nested_default(f: Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:  # type: ignore[misc]
        return f.default_factory()        # type: ignore[misc]
    return MISSING


def option_fields(cls: type, _path: tuple[str, ...] = ()) -> Iterator[OptionField]:
    """Every field of `cls` (and of its nested config dataclasses) that is an option, in declaration order."""
    for f in fields(cls):
        default = _nested_default(f)
        if "option" in f.metadata:
            yield OptionField(_path + (f.name,), f, f.metadata["option"], default, _field_type(f, default))
        elif is_dataclass(default):
            yield from option_fields(type(default), _path + (f.name,))


def option_defaults(cls: type) -> dict[str, Any]:
    """dest -> the value the option stands for when not given (the field's default, as the flag reads it)."""
    return {o.dest: (not o.default if o.option.negate else o.default) for o in option_fields(cls)}


def _split(text: str) -> list[str]:
    return [t.strip() for t in str(text).split(",") if t.strip()]


def add_options(parser, cls: type, *, suppress: bool = False) -> None:
    """Add every option of `cls` to `parser`, grouped as declared. suppress=True leaves an option that is
    not given out of the namespace (so a config file's value stays)."""
    groups: dict[str, Any] = {}
    for o in option_fields(cls):
        opt = o.option
        if isinstance(parser, argparse.ArgumentParser):
            g = groups.get(opt.group) or groups.setdefault(opt.group, parser.add_argument_group(opt.group))
        else:  # already a group
            g = parser
        shown = "off" if o.type is bool else ("all" if opt.csv and o.default is None else o.default)
        # a suppressed default is not shown by argparse: say it (an ArgumentDefaultsHelpFormatter shows the rest)
        said = suppress and "default" not in opt.help  # a help that already tells its default keeps its own words
        kw: dict[str, Any] = {"dest": opt.dest, "help": f"{opt.help} (default: {shown})" if said else opt.help}
        if o.default is MISSING:
            kw.update(required=True, type=o.type, help=opt.help)
            if opt.choices:
                kw["choices"] = list(opt.choices)
        elif o.type is bool:
            kw.update(action="store_true", default=argparse.SUPPRESS if suppress else False)
        else:
            kw.update(type=_split if opt.csv else o.type, default=argparse.SUPPRESS if suppress else o.default)
            if opt.choices and not opt.csv:  # argparse would check the parsed list as one value
                kw["choices"] = list(opt.choices)
            if opt.csv:
                kw["metavar"] = ",".join(opt.choices[:2]) + ",…" if opt.choices else "A,B,…"
        g.add_argument(opt.flag, *opt.aliases, **kw)


def _set(obj: Any, path: tuple[str, ...], value: Any) -> Any:
    if len(path) == 1:
        return replace(obj, **{path[0]: value})
    return replace(obj, **{path[0]: _set(getattr(obj, path[0]), path[1:], value)})


def _get(obj: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        obj = getattr(obj, name)
    return obj


def apply(cfg: Any, values: dict[str, Any]) -> Any:
    """`cfg` with every option whose dest is in `values` set from it (a flag's value as parsed)."""
    for o in option_fields(type(cfg)):
        if o.dest in values:
            v = values[o.dest]
            cfg = _set(cfg, o.path, (not v) if o.option.negate else v)
    return cfg


def values_of(cfg: Any) -> dict[str, Any]:
    """dest -> value of every option of `cfg`, as the flag would give it."""
    out = {}
    for o in option_fields(type(cfg)):
        v = _get(cfg, o.path)
        out[o.dest] = (not v) if o.option.negate else v
    return out


def validate(cfg: Any) -> None:
    """Raise ValueError naming the flag when an option's value is outside its choices or bounds."""
    for o in option_fields(type(cfg)):
        v, opt = _get(cfg, o.path), o.option
        if v is None or o.type is bool:
            continue
        if opt.choices and not opt.csv and v not in opt.choices:
            raise ValueError(f"{opt.flag} {v}: choose one of {', '.join(map(str, opt.choices))}")
        if opt.choices and opt.csv and any(x not in opt.choices for x in v):
            raise ValueError(f"{opt.flag} {','.join(v)}: choose from {', '.join(map(str, opt.choices))}")
        if opt.min is not None and v < opt.min:
            raise ValueError(f"{opt.flag} {v}: must be at least {opt.min:g}")
        if opt.max is not None and v > opt.max:
            raise ValueError(f"{opt.flag} {v}: must be at most {opt.max:g}")
