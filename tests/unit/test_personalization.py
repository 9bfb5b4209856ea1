"""Inline content's personalization (issue 17): paths, indexes, defaults, escaping, gaps."""

from __future__ import annotations

from typing import Any

import pytest

from mailroom.adapters.templates import TemplateRenderer
from mailroom.domain.errors import InvalidTemplate, MissingProp, TemplateSecurityError
from mailroom.domain.personalization import InlineContent, is_inline, translate_defaults
from mailroom.domain.templates import TemplateSource


@pytest.fixture(scope="module")
def renderer() -> TemplateRenderer:
    return TemplateRenderer()


def _content(
    html: str | None = None, text: str | None = None, subject: str = "Hi"
) -> InlineContent:
    return InlineContent(subject=subject, html=html, text=text)


PROPS: dict[str, Any] = {
    "first_name": "Ada",
    "user": {"address": {"city": "Zürich"}},
    "items": [{"sku": "A-1"}, {"sku": "B-2"}],
    "markup": "<b>Tom & Jerry</b>",
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ first_name }}", "Ada"),
        ("{{user.address.city}}", "Zürich"),
        ("{{ items.0.sku }}/{{ items.1.sku }}", "A-1/B-2"),
        ("{{ name|'Customer' }}", "Customer"),
        ('{{ name | "Customer" }}', "Customer"),
        ("{{ name|'O\\'Brien' }}", "O'Brien"),
        ('{{ name|"say \\"hi\\"" }}', 'say "hi"'),
        ("{{ first_name|'Customer' }}", "Ada"),
        ("{{ user.address.zip|'none' }}", "none"),
        ("{{ items.9.sku|'-' }}", "-"),
        ("{{ first_name|upper }}", "ADA"),
    ],
)
def test_personalization_resolves_paths_indexes_and_defaults(
    renderer: TemplateRenderer, text: str, expected: str
) -> None:
    # GIVEN inline text using one personalization form
    # WHEN it renders with the props
    rendered, missing = renderer.render_inline(_content(text=text).source, PROPS)
    # THEN the value (or its default) is there and nothing is reported missing
    assert rendered.text == expected
    assert missing == []


def test_values_are_escaped_in_html_raw_in_text_and_one_line_in_the_subject(
    renderer: TemplateRenderer,
) -> None:
    # GIVEN the same value in subject, html and text
    content = _content(subject="For {{ markup }}", html="<p>{{ markup }}</p>", text="{{ markup }}")
    props = {"markup": "<b>Tom & Jerry</b>\r\nBcc: x@example.com"}
    # WHEN it renders
    rendered, _ = renderer.render_inline(content.source, props)
    # THEN HTML escapes it, text keeps it raw, the subject has no line break
    assert "&lt;b&gt;Tom &amp; Jerry&lt;/b&gt;" in rendered.html
    assert "<b>Tom" not in rendered.html
    assert rendered.text.startswith("<b>Tom & Jerry</b>")
    assert rendered.subject == "For <b>Tom & Jerry</b> Bcc: x@example.com"
    assert "\r" not in rendered.subject
    assert "\n" not in rendered.subject


def test_every_missing_prop_is_found_in_one_render_with_its_full_path(
    renderer: TemplateRenderer,
) -> None:
    # GIVEN content that prints several props the request lacks, nested and indexed
    content = _content(
        subject="{{ title }}",
        html="{{ user.address.city }} {{ user.phone }} {{ items.5.sku }} {{ a.b.c }}",
        text="{{ title }} {{ ok|'fine' }}",
    )
    # WHEN it is checked
    missing = renderer.check_inline(content.source, {"user": {"address": {}}, "items": []})
    # THEN each is named once, by path, in order of use; the defaulted one is not
    assert missing == ["title", "user.address.city", "user.phone", "items.5.sku", "a.b.c"]


def test_a_lenient_render_prints_missing_props_empty(renderer: TemplateRenderer) -> None:
    rendered, missing = renderer.render_inline(
        _content(html="<p>[{{ first_name }}][{{ user.city }}]</p>").source, {}
    )
    assert "<p>[][]</p>" in rendered.html
    assert missing == ["first_name", "user.city"]


def test_a_missing_prop_used_in_arithmetic_is_missing_prop_not_a_crash(
    renderer: TemplateRenderer,
) -> None:
    # GIVEN content doing arithmetic on a missing prop (empty cannot stand in)
    content = _content(html="{{ shown }} {{ price * 2 }}")
    # WHEN it is checked THEN missing_prop names both
    with pytest.raises(MissingProp) as raised:
        renderer.check_inline(content.source, {})
    assert [d["field"] for d in raised.value.details] == ["props.shown", "props.price"]


def test_loops_and_conditions_see_missing_props_as_undefined(renderer: TemplateRenderer) -> None:
    content = _content(
        html="{% if vip is defined %}VIP{% endif %}{% for i in items %}{{ i.sku }},{% endfor %}"
    )
    rendered, missing = renderer.render_inline(
        content.source, {"items": [{"sku": "A"}, {"name": "no sku"}]}
    )
    assert "A," in rendered.html
    assert "VIP" not in rendered.html
    # The second item's sku is named by its place in props.
    assert missing == ["items.1.sku"]


def test_inline_content_is_sandboxed_like_templates(renderer: TemplateRenderer) -> None:
    with pytest.raises(TemplateSecurityError):
        renderer.check_inline(_content(html="{{ first_name.__class__ }}").source, PROPS)
    with pytest.raises(InvalidTemplate):
        renderer.check_inline(_content(html="{{ first_name|'x' ").source, PROPS)


def test_a_thousand_sends_of_one_content_compile_once() -> None:
    # GIVEN a fresh renderer
    renderer = TemplateRenderer()
    # WHEN a thousand sends carry the same content (each its own request object)
    for n in range(1000):
        renderer.check_inline(_content(html="<p>{{ n }}</p>").source, {"n": n})
    # THEN it was compiled once
    assert renderer.inline_store.metrics.compiles == 1


def test_inline_content_and_a_template_of_the_same_text_compile_apart() -> None:
    # GIVEN a template and inline content with the same text, using the shorthand
    renderer = TemplateRenderer()
    text = "{{ name|'Customer' }}"
    inline = _content(text=text).source
    # WHEN both are used THEN only inline content understands the shorthand
    assert renderer.render(inline, {}).text == "Customer"
    with pytest.raises(InvalidTemplate):
        renderer.render(TemplateSource(name="t", subject="s", html="", text=text), {})


def test_the_default_shorthand_is_rewritten_only_where_jinja_sees_a_pipe() -> None:
    from jinja2 import Environment

    source = "a|'b' {{ x|'y' }} {{ \"p|'q'\" }} {% if z|'w' %}{% endif %}"
    translated = translate_defaults(source, list(Environment().lex(source)))
    assert translated == (
        "a|'b' {{ x|default('y') }} {{ \"p|'q'\" }} {% if z|default('w') %}{% endif %}"
    )


def test_inline_names_cannot_be_template_names() -> None:
    content = _content(html="x")
    assert is_inline(content.template_name)
    assert len(content.template_name) <= 128
    assert content.template_name == _content(html="x").template_name
    assert content.template_name != _content(html="y").template_name
