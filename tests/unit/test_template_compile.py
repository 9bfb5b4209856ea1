"""The compile path's shortcuts (issue 8) give what Jinja's own path gives."""

from __future__ import annotations

import marshal
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from jinja2 import nodes
from jinja2.compiler import CodeGenerator

from mailroom.adapters.compiled_templates import PARTS, TemplateCompiler, TemplateMetrics
from mailroom.adapters.render_deadline import DeadlineWatchdog
from mailroom.adapters.template_sandbox import (
    BudgetedSandbox,
    ByteBudget,
    _BudgetedCodeGenerator,
    descendants,
    unsafe_accesses,
    unsupported_tags,
)
from mailroom.adapters.templates import FileTemplateStore, TemplateRenderer, TemplateSource
from mailroom.domain.errors import MissingProp, TemplateSecurityError

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
# Blocks, macros, call and filter blocks, tests and filters at every level:
# what the code generator asks about the tree before it writes anything.
EVERYTHING = """{% macro row(label, value) -%}
<tr><td>{{ label | upper }}</td><td>{{ caller() if caller else value | default('-') }}</td></tr>
{%- endmacro %}
{% block head %}<h1>{{ title | title }}</h1>
{% if title is string %}{{ title | length }}{% endif %}{% endblock %}
{% for item in items if item is mapping %}
  {{ row(item.name, item.price | round(2)) }}
  {% call row('note') %}{{ item.note | e }}{% endcall %}
  {% filter lower %}{{ loop.index }} {{ item.name ~ '!' }}{% endfilter %}
{% else %}{{ 'none' | center(6) }}
{% endfor %}
{% block foot %}{{ items | map(attribute='name') | join(', ') }}{% endblock %}
{% set total = items | sum(attribute='price') %}{{ total is number }} {{ '%05d' | format(42) }}
"""


def _compiler() -> TemplateCompiler:
    return TemplateCompiler(DeadlineWatchdog(), timeout_seconds=2.0, budget_bytes=1 << 20)


class _JinjasOwnGenerator(_BudgetedCodeGenerator):
    """The sandbox's generator without its pull_dependencies shortcut."""

    def pull_dependencies(self, roots: Iterable[nodes.Node]) -> None:
        CodeGenerator.pull_dependencies(self, roots)


def _jinjas_own_codes(compiler: TemplateCompiler, source: TemplateSource) -> list[Any]:
    """Each part as Environment.compile(str) makes it: Jinja's parse, walks and visitors."""
    codes: list[Any] = []
    with compiler.budget.limit(compiler.budget.default):
        for part in PARTS:
            text = getattr(source, part)
            env = BudgetedSandbox(autoescape=part == "html", budget=compiler.budget)
            env.code_generator_class = _JinjasOwnGenerator
            codes.append(None if text is None else env.compile(text, part, f"<{part}>"))
    return codes


@pytest.mark.parametrize(
    "source",
    [
        TemplateSource(name="html", subject="{{ title }}", html=EVERYTHING),
        TemplateSource(name="text", subject="s", html="<p>{{ title }}</p>", text=EVERYTHING),
        FileTemplateStore(TEMPLATES).get("receipt"),
    ],
    ids=["html", "text", "receipt"],
)
def test_the_compiled_code_is_what_jinjas_own_path_makes(source: TemplateSource) -> None:
    # GIVEN templates using every construct the code generator looks for
    compiler = _compiler()
    # WHEN one is compiled through the shortcuts
    codes = marshal.loads(compiler.compile(source))
    # THEN each part's code equals the code Jinja makes on its own
    assert list(codes) == _jinjas_own_codes(compiler, source)


def test_one_walk_finds_the_nodes_in_find_alls_order() -> None:
    # GIVEN a parsed template
    env = BudgetedSandbox(autoescape=True, budget=ByteBudget(1 << 20))
    ast = env.parse(EVERYTHING + "{{ x.__class__ }}{% include 'other' %}")
    # WHEN its nodes are listed in one walk
    below = descendants(ast)
    # THEN they are find_all's nodes, in its order, and the checks see the same
    assert [id(node) for node in below] == [id(node) for node in ast.find_all(nodes.Node)]
    assert unsafe_accesses(ast, below) == unsafe_accesses(ast) == [(14, "attribute '__class__'")]
    assert unsupported_tags(ast, below) == unsupported_tags(ast) == [(14, "include")]
    assert "find_all" not in vars(ast)


class TestDictLookups:
    """``x.name`` on a plain dict skips getattr(); the sandbox's answer is unchanged."""

    def _render(self, text: str, props: dict[str, Any]) -> str:
        source = TemplateSource(name="t", subject="s", html="<p></p>", text=text)
        return TemplateRenderer().render(source, props).text

    def test_a_key_is_found(self) -> None:
        assert self._render("{{ o.name }}/{{ o['name'] }}", {"o": {"name": "x"}}) == "x/x"

    def test_a_dict_attribute_still_wins_over_a_key_of_the_same_name(self) -> None:
        # GIVEN a prop with keys named like dict methods
        props = {"o": {"items": "listed", "keys": "k"}}
        # WHEN the template reads them as attributes and as items
        html = self._render(
            "{{ o.items is string }} {{ o['items'] }} {{ o.keys is callable }}", props
        )
        # THEN attributes are the dict's methods, as in Jinja, and items are the keys
        assert html == "False listed True"

    def test_a_mutating_method_is_refused_even_when_a_key_has_its_name(self) -> None:
        with pytest.raises(TemplateSecurityError):
            self._render("{{ o.update }}", {"o": {"update": "no"}})

    def test_a_missing_key_names_the_missing_prop(self) -> None:
        with pytest.raises(MissingProp, match="has no attribute 'nope'"):
            self._render("{{ o.nope }}", {"o": {"name": "x"}})


def test_an_equal_or_edited_source_object_is_keyed_by_its_content() -> None:
    # GIVEN a renderer that has compiled one source
    metrics = TemplateMetrics()
    renderer = TemplateRenderer(metrics=metrics)
    first = TemplateSource(name="t", subject="s", html="<p></p>", text="n={{ n }}")
    assert renderer.render(first, {"n": 1}).text == "n=1"
    # WHEN the same object, an equal copy, and an edited copy render
    renderer.render(first, {"n": 2})
    renderer.render(
        TemplateSource(name="t", subject="s", html="<p></p>", text="n={{ n }}"), {"n": 3}
    )
    edited = TemplateSource(name="t", subject="s", html="<p></p>", text="m={{ n }}")
    text = renderer.render(edited, {"n": 4}).text
    # THEN only the edit compiles again, and renders as edited
    assert (metrics.compiles, text) == (2, "m=4")
