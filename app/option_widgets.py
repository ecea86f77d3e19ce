"""The New-run form's option widgets, built from the config fields that declare the options.

Label, default, choices, bounds and help come from the field's metadata (multimem_core.config), the same
that `multimem score`'s flags are generated from, so the page and the command line cannot drift apart.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from multimem_core.config import ScoreConfig
from multimem_core.options import OptionField, option_fields

# Shown above "More options", in this order; every other option with a label goes inside it.
BASIC = ("protocol", "folds", "epochs", "image_tower", "text_tower")
LABELLED = [o for o in option_fields(ScoreConfig) if o.option.label]
FORM_OPTIONS = ([next(o for o in LABELLED if o.dest == d) for d in BASIC],
                [o for o in LABELLED if o.dest not in BASIC])
WORDS = {"": "same as the image tower"}  # a suggestion's words where its value is empty


def widget_key(o: OptionField) -> str:
    return f"newrun_{o.dest}"


def option_widget(o: OptionField, *, disabled: bool = False) -> Any:
    """Draw the option's widget; returns its value as the config field takes it."""
    opt, key = o.option, widget_key(o)
    common = {"key": key, "help": opt.help, "disabled": disabled}
    if opt.choices:
        options = list(opt.choices)
        draw = st.radio if len(options) <= 2 else st.selectbox
        return draw(opt.label, options, index=options.index(o.default), **common)
    if opt.suggestions:
        options = list(dict.fromkeys([*opt.suggestions, o.default]))
        return st.selectbox(opt.label, options, index=options.index(o.default),
                            format_func=lambda v: WORDS.get(v, v), **common)
    if o.type in (int, float):
        cast, none_is_zero = o.type, o.default is None  # 0 on the page stands for the field's None
        low = 0 if none_is_zero else opt.min
        value = st.number_input(opt.label, min_value=None if low is None else cast(low),
                                max_value=None if opt.max is None else cast(opt.max),
                                value=cast(o.default or 0), step=cast(opt.step or 1), **common)
        value = cast(value)
        return (value or None) if none_is_zero else value
    return st.text_input(opt.label, value=o.default or "", **common) or o.default
