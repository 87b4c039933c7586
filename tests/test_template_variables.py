"""A template needs exactly the variables it cannot render without: no more, no fewer."""

from __future__ import annotations

import pytest
from jinja2 import DictLoader, StrictUndefined, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from email_worker.errors import TemplateRenderError
from email_worker.kinds import KINDS
from email_worker.rendering.renderer import Renderer
from email_worker.rendering.template_variables import required_variables, template_uses


def needs(main: str, **others: str) -> set[str]:
    templates = {"main": main, **others}
    return set(required_variables("main", templates.get))


def renders_without(name: str, main: str, **others: str) -> bool:
    """Whether ``main`` renders (as the worker does, strictly) when ``name`` is missing."""
    env = SandboxedEnvironment(
        loader=DictLoader({"main": main, **others}), undefined=StrictUndefined
    )
    data = {"x": "a", "items": [1], "y": "b", "p": "c"}
    data.pop(name)
    try:
        env.get_template("main").render(data)
    except UndefinedError:
        return False
    return True


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_each_kind_needs_exactly_what_its_templates_cannot_render_without(kind) -> None:  # type: ignore[no-untyped-def]
    renderer = Renderer()
    needed = renderer.required_variables(kind.template)
    sample = dict(kind.sample_data)
    assert needed <= set(sample)
    renderer.render(kind.template, {name: sample[name] for name in needed})
    for name in sample:
        rest = {key: value for key, value in sample.items() if key != name}
        if name in needed:
            with pytest.raises(TemplateRenderError, match=name):
                renderer.render(kind.template, rest)
        else:
            renderer.render(kind.template, rest)


def test_the_password_reset_needs_its_link_and_expiry_and_not_the_optional_ip() -> None:
    needed = Renderer().required_variables("password_reset")
    assert needed == {"user_name", "reset_url", "expires_in_minutes"}


@pytest.mark.parametrize(
    "main",
    [
        "{% if x is defined %}{{ x }}{% endif %}",
        "{% if x is not defined %}-{% else %}{{ x }}{% endif %}",
        "{% if x is undefined %}-{% elif x %}{{ x }}{% endif %}",
        "{{ x|default('none') }}{{ x|d('none') }}",
        "{{ x if x is defined else 'none' }}",
        "{{ x is defined and x }}",
        "{{ x is undefined or x }}",
        "{% set has_x = x is defined and x %}{% if has_x %}{{ x }}{% endif %}",
        "{% if x is defined and y is defined %}{{ x }}{% endif %}{{ y }}",
        "{{ x is none }}{{ x is string }}",
        "{% set x = 'set here' %}{{ x }}",
        "{% for x in items %}{{ x }}{{ loop.index }}{% endfor %}",
        "{% macro show(x) %}{{ x }}{{ caller() }}{% endmacro %}{% call show(1) %}{% endcall %}",
    ],
)
def test_a_variable_read_only_under_a_guard_or_set_by_the_template_is_not_needed(
    main: str,
) -> None:
    assert "x" not in needs(main)
    assert renders_without("x", main)


@pytest.mark.parametrize(
    "main",
    [
        "{{ x }}",
        "{% if x %}yes{% endif %}",
        "{{ x.name|default('') }}",
        "{% for item in x %}{{ item }}{% endfor %}",
        "{% if x is defined %}{% endif %}{{ x }}",
        "{% if y is defined or x is defined %}{{ x }}{% endif %}",
        "{{ 'a' if x is defined else x }}",
    ],
)
def test_a_variable_read_outside_a_guard_is_needed(main: str) -> None:
    assert "x" in needs(main)
    assert not renders_without("x", main)


LAYOUT = (
    "{% set brand = p if p is defined else 'Example' %}"
    "<title>{% block title %}{{ brand }}{% endblock %}</title>"
    "{% block content %}{% endblock %}{% block footer %}{{ y }}{% endblock %}"
)


def test_a_layout_block_the_child_replaces_is_not_rendered_and_its_variables_not_needed() -> None:
    child = (
        '{% extends "layout" %}{% block title %}{{ x }}{% endblock %}'
        "{% block footer %}{{ brand }}{% endblock %}"
    )
    assert needs(child, layout=LAYOUT) == {"x"}
    assert needs('{% extends "layout" %}', layout=LAYOUT) == {"y"}
    calls_super = '{% extends "layout" %}{% block footer %}{{ super() }}{{ x }}{% endblock %}'
    assert needs(calls_super, layout=LAYOUT) == {"x", "y"}


def test_included_and_imported_templates_are_followed() -> None:
    part = "{{ x }}{% if p is defined %}{{ p }}{% endif %}"
    assert needs('{% include "part" %}', part=part) == {"x"}
    assert needs('{% if x is defined %}{% include "part" %}{% endif %}', part=part) == set()
    macros = "{% macro show(value) %}{{ value }}{% endmacro %}"
    assert needs('{% from "macros" import show %}{{ show(y) }}', macros=macros) == {"y"}
    assert needs('{% include "gone" ignore missing %}') == set()


def test_jinja_globals_are_not_needed() -> None:
    assert needs("{% for i in range(3) %}{{ i }}{% endfor %}{{ dict(a=1) }}") == set()


def test_a_template_that_extends_or_includes_itself_is_followed_a_bounded_number_of_times() -> None:
    assert needs('{% extends "main" %}{% block a %}{{ x }}{% endblock %}') == {"x"}
    assert needs('{% include "main" %}{{ x }}') == {"x"}


def test_a_source_that_does_not_parse_needs_nothing_here() -> None:
    assert needs("{% if %}") == set()  # rendering names the broken line


def test_the_analysis_of_a_source_is_kept() -> None:
    source = "{{ kept_once }}"
    assert template_uses(source) is template_uses(source)


def test_a_template_without_a_text_part_needs_what_its_subject_and_html_need() -> None:
    assert Renderer().required_variables("html_only_notice") == {"title", "message"}
