"""Compiled template code in Redis is sealed, and only sealed code is ever loaded.

Redis is the machine's; each test plays an attacker who can write to it and
then renders on a fresh instance (an empty LRU, as a new Lambda container).
The attacker's code sets a flag on ``builtins`` when it runs: Jinja executes a
template's module code as soon as it is loaded, before any render.
"""

from __future__ import annotations

import builtins
import logging
import marshal
import uuid
from collections.abc import Iterator

import pytest

from mailroom.adapters.compiled_templates import CodeSigner, template_key
from mailroom.adapters.redis_store import RedisStore
from mailroom.adapters.redis_template_code import RedisTemplateCode
from mailroom.adapters.templates import TemplateRenderer
from mailroom.domain.templates import TemplateSource

pytestmark = pytest.mark.integration

KEY = b"the-deployment-s-template-code-signing-key"
OTHER_KEY = b"someone-else-s-template-code-signing-key!!"
FLAG = "mailroom_tampered_code_ran"
# What an attacker stores: a valid marshalled tuple of three code objects, the
# shape the loader expects, whose module code raises the flag.
PAYLOAD = compile(f"import builtins\nbuiltins.{FLAG} = True\n", "<evil>", "exec")
EVIL_CODE = marshal.dumps((PAYLOAD, PAYLOAD, PAYLOAD))


@pytest.fixture
def shared(redis_url: str) -> RedisTemplateCode:
    return RedisTemplateCode(RedisStore(redis_url))


@pytest.fixture(autouse=True)
def no_flag() -> Iterator[None]:
    if hasattr(builtins, FLAG):
        delattr(builtins, FLAG)
    yield
    if hasattr(builtins, FLAG):
        delattr(builtins, FLAG)


def _instance(shared: RedisTemplateCode, key: bytes = KEY) -> TemplateRenderer:
    return TemplateRenderer(shared=shared, signing_key=key)


def _source(label: str = "greeting") -> TemplateSource:
    unique = uuid.uuid4().hex
    return TemplateSource(
        name=label, subject=f"Hi {{{{ name }}}} {unique}", html=f"<p>{label} {{{{ name }}}}</p>"
    )


def _assert_recompiled_and_right(
    renderer: TemplateRenderer, source: TemplateSource, shared: RedisTemplateCode
) -> None:
    rendered = renderer.render(source, {"name": "Ada"})
    assert not hasattr(builtins, FLAG), "the tampered code was executed"
    assert rendered.subject == source.subject.replace("{{ name }}", "Ada")
    assert f"<p>{source.name} Ada</p>" in rendered.html
    assert renderer.store.metrics.compiles == 1
    # The store holds a valid seal again: the next instance loads without compiling.
    blob = shared.get(template_key(source))
    assert blob is not None
    assert CodeSigner(KEY).open(template_key(source), blob) is not None
    follower = _instance(shared)
    assert follower.render(source, {"name": "Ada"}).html == rendered.html
    assert follower.store.metrics.compiles == 0


def test_sealed_code_is_shared_between_instances(shared: RedisTemplateCode) -> None:
    # GIVEN one instance compiled a template and published it
    source = _source()
    first = _instance(shared)
    expected = first.render(source, {"name": "Ada"})
    # WHEN a fresh instance needs it
    second = _instance(shared)
    # THEN it loads the published code, verified, without compiling
    assert second.render(source, {"name": "Ada"}) == expected
    assert (first.store.metrics.compiles, second.store.metrics.compiles) == (1, 0)


def test_a_tampered_blob_is_never_executed_and_the_render_still_succeeds(
    shared: RedisTemplateCode, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a published template whose code an attacker swapped for their own,
    # keeping the original seal's header and MAC
    source = _source()
    _instance(shared).prepare(source)
    key = template_key(source)
    published = shared.get(key)
    assert published is not None
    genuine = CodeSigner(KEY).open(key, published)
    assert genuine is not None
    header = published[: len(published) - len(genuine)]  # tag and MAC
    shared.put(key, header + EVIL_CODE, ttl_seconds=600)
    # WHEN a fresh instance renders it
    renderer = _instance(shared)
    with caplog.at_level(logging.WARNING):
        # THEN the swapped code never ran, the template was compiled from its
        # source, rendered right, and published with a good seal again
        _assert_recompiled_and_right(renderer, source, shared)
    assert "failed its signature check" in caplog.text


def test_a_blob_signed_with_another_key_is_refused(shared: RedisTemplateCode) -> None:
    # GIVEN the attacker's code, properly sealed for this template's key, but
    # with a key that is not the deployment's
    source = _source()
    key = template_key(source)
    shared.put(key, CodeSigner(OTHER_KEY).seal(key, EVIL_CODE), ttl_seconds=600)
    # WHEN / THEN it is refused: compiled from source, never executed
    _assert_recompiled_and_right(_instance(shared), source, shared)


def test_a_blob_moved_under_another_templates_key_is_refused(shared: RedisTemplateCode) -> None:
    # GIVEN a genuine, validly sealed blob of one template copied under the key
    # of another (whose own code is not published)
    other, target = _source("other"), _source("target")
    _instance(shared).prepare(other)
    moved = shared.get(template_key(other))
    assert moved is not None
    shared.put(template_key(target), moved, ttl_seconds=600)
    # WHEN the target is rendered on a fresh instance
    # THEN the target's own code runs, not the other template's
    _assert_recompiled_and_right(_instance(shared), target, shared)


def test_code_without_a_signature_is_recompiled(shared: RedisTemplateCode) -> None:
    # GIVEN code stored as it was before seals existed: marshalled, unsigned
    source = _source()
    shared.put(template_key(source), EVIL_CODE, ttl_seconds=600)
    # WHEN / THEN it is compiled again from source, and the store is sealed
    _assert_recompiled_and_right(_instance(shared), source, shared)


def test_a_shared_store_without_a_signing_key_is_refused(shared: RedisTemplateCode) -> None:
    # GIVEN / WHEN a renderer is wired to Redis without a key
    # THEN it refuses to be built: it would have to load unsigned code
    with pytest.raises(ValueError, match="signing key"):
        TemplateRenderer(shared=shared)
