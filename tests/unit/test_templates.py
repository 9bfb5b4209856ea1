"""Template store and renderer, on the repo's own templates."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailroom.adapters.templates import FileTemplateStore, TemplateRenderer, TemplateSource
from mailroom.domain.errors import RenderError, UnknownTemplate

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def test_welcome_renders_its_sample_with_inlined_css_and_every_loop_row() -> None:
    # GIVEN the shipped welcome template and its sample props
    source = FileTemplateStore(TEMPLATES).get("welcome")
    assert source.sample_props is not None
    # WHEN it is rendered
    rendered = TemplateRenderer().render(source, source.sample_props)
    # THEN the subject is one line, CSS is inlined, the media query survives,
    # and the loop produced one table row per step
    assert rendered.subject == "Welcome to Mailroom, Ada!"
    assert 'style="' in rendered.html
    assert "@media only screen and (max-width: 620px)" in rendered.html
    for step in source.sample_props["steps"]:
        assert f">{step}</td>" in rendered.html
        assert step in rendered.text
    assert rendered.html.count("<tr") == len(source.sample_props["steps"])


def test_props_are_html_escaped_but_subject_and_text_are_not() -> None:
    source = TemplateSource(
        name="t", subject="Hi {{ name }}", html="<p>{{ name }}</p>", text="Hi {{ name }}"
    )
    rendered = TemplateRenderer().render(source, {"name": "<b>Tom & Jerry</b>"})
    assert "&lt;b&gt;Tom &amp; Jerry&lt;/b&gt;" in rendered.html
    assert rendered.subject == "Hi <b>Tom & Jerry</b>"
    assert rendered.text == "Hi <b>Tom & Jerry</b>"


def test_a_missing_prop_is_an_error_not_an_empty_string() -> None:
    source = TemplateSource(name="t", subject="Hi {{ name }}", html="<p>{{ name }}</p>")
    with pytest.raises(RenderError, match="name"):
        TemplateRenderer().render(source, {})


def test_subject_with_line_breaks_from_props_is_folded_to_one_line() -> None:
    source = TemplateSource(name="t", subject="Hi {{ name }}", html="<p>x</p>")
    rendered = TemplateRenderer().render(source, {"name": "Ada\r\nBcc: evil@example.com"})
    assert rendered.subject == "Hi Ada Bcc: evil@example.com"


def test_text_is_derived_from_html_when_the_template_has_none() -> None:
    source = TemplateSource(name="t", subject="s", html="<h1>Title</h1><p>Body {{ n }}</p>")
    assert TemplateRenderer().render(source, {"n": 3}).text == "Title\n\nBody 3\n"


def test_sandbox_refuses_unsafe_attribute_access() -> None:
    source = TemplateSource(name="t", subject="s", html="{{ ''.__class__.__mro__ }}")
    with pytest.raises(RenderError):
        TemplateRenderer().render(source, {})


@pytest.mark.parametrize("name", ["missing", "../templates/welcome", "Welcome", ""])
def test_unknown_or_unsafe_names_are_unknown_templates(name: str) -> None:
    with pytest.raises(UnknownTemplate):
        FileTemplateStore(TEMPLATES).get(name)
