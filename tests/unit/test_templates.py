"""Template store and renderer, on the repo's own templates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest

from mailroom.adapters.templates import (
    FileTemplateStore,
    LayeredTemplateStore,
    TemplateRenderer,
    TemplateSource,
)
from mailroom.domain.errors import (
    InvalidProps,
    InvalidTemplate,
    RenderError,
    TemplateReadOnly,
    UnknownTemplate,
)
from mailroom.domain.templates import check_schema, lint, validate_props
from tests.fakes import DictTemplateStore

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


def test_every_shipped_template_renders_its_sample_and_satisfies_its_schema() -> None:
    store = FileTemplateStore(TEMPLATES)
    for name in store.names():
        source = store.get(name)
        assert source.sample_props is not None, name
        validate_props(name, source.schema, source.sample_props)
        rendered = TemplateRenderer().render(source, source.sample_props)
        assert lint(source, rendered) == [], name


def test_the_receipt_renders_every_line_item_inside_its_table() -> None:
    source = FileTemplateStore(TEMPLATES).get("receipt")
    assert source.sample_props is not None
    rendered = TemplateRenderer().render(source, source.sample_props)
    items = source.sample_props["items"]
    assert len(items) == 10
    table = rendered.html.split('class="items"')[1].split("</table>")[0]
    for item in items:
        assert item["name"] in table
    assert "@media only screen and (max-width: 620px)" in rendered.html
    assert rendered.subject.startswith("Your Northwind Outfitters receipt #NW-100482")


class TestPropsSchema:
    SCHEMA: ClassVar[dict[str, Any]] = {
        "type": "object",
        "required": ["order", "items"],
        "properties": {
            "order": {"type": "object", "required": ["total"]},
            "items": {"type": "array", "items": {"type": "object", "required": ["price"]}},
            "coupon": {"type": "string", "maxLength": 8},
        },
    }

    def test_valid_props_pass(self) -> None:
        validate_props("t", self.SCHEMA, {"order": {"total": 3}, "items": [{"price": 3}]})

    def test_every_failing_field_is_named(self) -> None:
        with pytest.raises(InvalidProps) as refused:
            validate_props(
                "t", self.SCHEMA, {"order": {}, "items": [{"price": 1}, {}], "coupon": "TOO-LONG-1"}
            )
        fields = [detail["field"] for detail in refused.value.details]
        assert fields == ["props.coupon", "props.items.1.price", "props.order.total"]
        assert refused.value.code == "invalid_props"
        assert "props.coupon" in refused.value.message

    def test_a_missing_top_level_prop_is_named(self) -> None:
        with pytest.raises(InvalidProps) as refused:
            validate_props("t", self.SCHEMA, {"order": {"total": 1}})
        assert [d["field"] for d in refused.value.details] == ["props.items"]

    def test_a_schema_that_is_not_json_schema_is_refused(self) -> None:
        with pytest.raises(InvalidTemplate):
            check_schema({"type": "no-such-type"})

    def test_file_templates_read_their_schema(self, tmp_path: Path) -> None:
        folder = tmp_path / "t"
        folder.mkdir()
        (folder / "html").write_text("<p>{{ n }}</p>")
        (folder / "schema.json").write_text(json.dumps({"required": ["n"]}))
        assert FileTemplateStore(tmp_path).get("t").schema == {"required": ["n"]}


class TestLint:
    def test_a_clean_template_has_no_warnings(self) -> None:
        source = TemplateSource(name="t", subject="s", html='<img src="a" alt="">', text="t")
        assert lint(source, TemplateRenderer().render(source, {})) == []

    def test_each_rule(self) -> None:
        source = TemplateSource(
            name="t",
            subject="s",
            html=(
                '<link rel="stylesheet" href="https://cdn.example.com/a.css">'
                '<img src="a"><img src="b" alt="b"><script>alert(1)</script>'
                "<p>{{ 'x' * 110000 }}</p>"
            ),
        )
        rendered = TemplateRenderer().render(source, {})
        codes = [warning.code for warning in lint(source, rendered)]
        assert codes == [
            "html_too_large",
            "no_text_part",
            "image_without_alt",
            "remote_stylesheet",
            "script",
        ]


class TestStores:
    def test_a_file_template_has_no_versions_to_pin(self) -> None:
        with pytest.raises(UnknownTemplate, match="no versions"):
            FileTemplateStore(TEMPLATES).get("welcome", 2)

    def test_file_templates_are_read_only_through_the_layered_store(self) -> None:
        store = LayeredTemplateStore(FileTemplateStore(TEMPLATES), DictTemplateStore())
        with pytest.raises(TemplateReadOnly):
            store.add_version(TemplateSource(name="welcome", subject="s", html="x"))

    def test_uploads_are_numbered_and_the_newest_wins_unless_pinned(self) -> None:
        store = LayeredTemplateStore(FileTemplateStore(TEMPLATES), DictTemplateStore())
        for html in ("one", "two"):
            store.add_version(TemplateSource(name="promo", subject="s", html=html))
        assert store.get("promo").html == "two"
        assert store.get("promo", 1).html == "one"
        assert [(v.name, v.kind, v.version) for v in store.versions() if v.name == "promo"] == [
            ("promo", "uploaded", 1),
            ("promo", "uploaded", 2),
        ]
        with pytest.raises(UnknownTemplate):
            store.get("promo", 3)


def test_an_edited_template_is_never_served_from_the_old_compiled_code(tmp_path: Path) -> None:
    # GIVEN a file template rendered once (so its code is in the LRU)
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "html").write_text("<p>old {{ n }}</p>")
    store, renderer = FileTemplateStore(tmp_path), TemplateRenderer()
    assert "old 1" in renderer.render(store.get("t"), {"n": 1}).html
    # WHEN the file changes
    (folder / "html").write_text("<p>new {{ n }}</p>")
    # THEN the next render uses it
    assert "new 2" in renderer.render(store.get("t"), {"n": 2}).html
