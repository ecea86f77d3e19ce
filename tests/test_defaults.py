"""Each option of `multimem score` is declared once, on its config field (multimem_core.config): the parser's
options, the New-run page's widgets and the config the command builds all come from that field's metadata,
and no other module spells its flag, help or default."""

from __future__ import annotations

import argparse
import io
import re
import tokenize
from pathlib import Path

import pytest

from multimem_core.cli import build_parser
from multimem_core.cli.score import score_config
from multimem_core.config import ScoreConfig
from multimem_core.options import option_fields

ROOT = Path(__file__).resolve().parent.parent
SCORE = list(option_fields(ScoreConfig))
# the commands' own arguments, not ScoreConfig's options
OWN = {"score": {"help", "out", "config"}, "demo": {"help", "dataset", "out", "samples", "inject_rate", "quick"}}
# Other commands with an option of the same spelling and their own meaning, declared in their own module.
ELSEWHERE = {"multimem_core/cli/imports.py": {"--modalities", "--no-projection", "--seed"},
             "multimem_core/mitigation/settings.py": {"--modalities", "--epochs", "--views", "--device", "--quiet"},
             "multimem_core/cli/mitigation.py": {"--device", "--quiet"}}


def subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def get(cfg, path):
    for name in path:
        cfg = getattr(cfg, name)
    return cfg


def test_option_fields_cover_the_options_and_nothing_is_declared_twice():
    flags = [f for o in SCORE for f in (o.option.flag, *o.option.aliases)]
    assert len(flags) == len(set(flags)) and len({o.dest for o in SCORE}) == len(SCORE)
    assert {"--epochs", "--folds", "--image-tower", "--text-tower", "--views", "--image-size", "--seed"} <= set(flags)


@pytest.mark.parametrize("command", ["score", "demo"])
def test_the_parsers_options_equal_the_fields_metadata(command):
    parser = subparsers()[command]
    generated = {a.dest: a for a in parser._actions if a.option_strings and a.dest not in OWN[command]}
    assert set(generated) == {o.dest for o in SCORE}
    for o in SCORE:
        a = generated[o.dest]
        assert a.option_strings == [o.option.flag, *o.option.aliases]
        assert a.help.startswith(o.option.help)
        assert (list(a.choices) if a.choices else None) == (list(o.option.choices) if o.option.choices and not o.option.csv else None)
        if command == "score":  # not given: out of the namespace, so --config's value stands; the help says the field's default
            assert a.default is argparse.SUPPRESS
            shown = "off" if o.type is bool else ("all" if o.option.csv and o.default is None else o.default)
            assert a.help.endswith(f"(default: {shown})") or "default" in o.option.help  # or its own words say it


def test_a_plain_score_command_is_the_config_defaults():
    args = build_parser().parse_args(["score", "m.csv", "--out", "run"])
    assert score_config(args, "m.csv", "run") == ScoreConfig(input="m.csv", out="run")


def _other_value(o):
    """A valid value that differs from the field's default, and its command-line text."""
    opt = o.option
    if opt.csv:
        return ["image", "text"], "image,text"
    if opt.choices:
        v = next(c for c in opt.choices if c != o.default)
        return v, str(v)
    if opt.suggestions:
        v = next(c for c in opt.suggestions if c and c != o.default)
        return v, v
    if o.type is int:
        v = int((o.default or opt.min or 1) + 1)
        return v, str(v)
    if o.type is float:
        v = round(((o.default or 0) + (opt.min or 0.01) + (opt.max or 1)) / 2, 3)
        return v, str(v)
    return "some-value", "some-value"


@pytest.mark.parametrize("o", SCORE, ids=lambda o: o.option.flag)
def test_each_option_reaches_its_field(o):
    base = ["score", "m.csv", "--out", "run"]
    if o.type is bool:
        args = build_parser().parse_args(base + [o.option.flag])
        expected = not o.default
    else:
        expected, text = _other_value(o)
        args = build_parser().parse_args(base + [o.option.flag, text])
    assert get(score_config(args, "m.csv", "run"), o.path) == expected


def _sources():
    for folder in ("multimem_core", "app"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel not in ("multimem_core/config.py", "multimem_core/options.py"):
                yield rel, path.read_text()


def code_only(text: str) -> str:
    """The source without its strings and comments (a docstring may name a field)."""
    skip = (tokenize.STRING, tokenize.COMMENT, getattr(tokenize, "FSTRING_MIDDLE", -1))
    return " ".join(t.string for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type not in skip)


def test_no_score_option_is_written_outside_its_field():
    """Its flag as a string, its help, or its default read off a config class appear in no other module."""
    classes = "ScoreConfig|TrainConfig|ModelConfig|MediaSpec|ProtocolConfig|AugmentConfig|ColumnKeys"
    fields = "|".join(o.path[-1] for o in SCORE)
    default_read = re.compile(rf"\b({classes})\.({fields})\b")
    offenders = []
    for rel, text in _sources():
        for o in SCORE:
            for flag in (o.option.flag, *o.option.aliases):
                if flag in ELSEWHERE.get(rel, ()):
                    continue
                if re.search(rf"""["']{re.escape(flag)}["']""", text):
                    offenders.append(f"{rel}: the flag {flag}")
            if o.option.help[:40] in text and o.option.flag not in ELSEWHERE.get(rel, ()):
                offenders.append(f"{rel}: the help of {o.option.flag}")
        offenders += [f"{rel}: the default {m.group(0)}" for m in default_read.finditer(code_only(text))]
    assert not offenders, offenders


def test_new_run_widgets_are_built_from_the_fields(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from app.option_widgets import FORM_OPTIONS, widget_key

    (tmp_path / "runs").mkdir()
    monkeypatch.setenv("MULTIMEM_RUN", str(tmp_path / "runs"))
    monkeypatch.setenv("MULTIMEM_DATA_ROOT", str(tmp_path))
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=90)
    at.run()
    at.switch_page("views/new_run.py").run()
    assert not at.exception, [e.value for e in at.exception]
    widgets = {w.key: w for kind in ("number_input", "selectbox", "radio") for w in getattr(at, kind) if w.key}
    shown = [o for part in FORM_OPTIONS for o in part]
    assert len(shown) >= 10
    for o in shown:
        w = widgets[widget_key(o)]
        assert (w.label, w.help) == (o.option.label, o.option.help)
        assert (w.value or None if o.default is None else w.value) == o.default, o.dest
        if o.option.choices:
            assert list(w.options) == [str(c) for c in o.option.choices]


def test_help_says_each_default_once():
    """A help that already tells its default gets no second "(default: …)", and flags read on/off."""
    import re

    from multimem_core.cli import build_parser

    for name, sub in build_parser()._subparsers._group_actions[0].choices.items():
        text = " ".join(sub.format_help().split())
        assert not re.search(r"default[^()]*\) \(default: ", text), name
        assert "(default: False)" not in text and "(default: True)" not in text, name
