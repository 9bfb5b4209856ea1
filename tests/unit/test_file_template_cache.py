"""File templates are read once and re-read when a file changes (adapters/templates.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailroom.adapters.templates import FileTemplateStore
from mailroom.domain.errors import InvalidTemplate


def _template(root: Path) -> Path:
    folder = root / "hello"
    folder.mkdir()
    (folder / "subject").write_text("Hello\n", encoding="utf-8")
    (folder / "html").write_text("<p>Hi {{ name }}</p>", encoding="utf-8")
    return folder


def test_an_unchanged_template_is_not_read_again(tmp_path: Path) -> None:
    # GIVEN a file template read once
    _template(tmp_path)
    store = FileTemplateStore(tmp_path)
    first = store.get("hello")
    # WHEN it is asked for again with no file changed
    second = store.get("hello")
    # THEN the same parsed source comes back
    assert second is first


def test_an_edited_added_or_removed_file_is_what_the_next_get_returns(tmp_path: Path) -> None:
    # GIVEN a file template read once
    folder = _template(tmp_path)
    store = FileTemplateStore(tmp_path)
    assert store.get("hello").text is None
    # WHEN its html is edited (same size, later mtime), a text part is added
    (folder / "html").write_text("<p>Yo {{ name }}</p>", encoding="utf-8")
    later = os.stat(folder / "html").st_mtime_ns + 1_000_000
    os.utime(folder / "html", ns=(later, later))
    (folder / "text").write_text("Yo\n", encoding="utf-8")
    edited = store.get("hello")
    # THEN the next get sees both changes
    assert edited.html == "<p>Yo {{ name }}</p>"
    assert edited.text == "Yo\n"
    # AND removing the subject file is seen as well
    (folder / "subject").unlink()
    assert store.get("hello").subject == ""


def test_meta_json_marks_a_template_bulk_and_an_edit_is_seen(tmp_path: Path) -> None:
    # GIVEN a file template without meta.json: not bulk
    folder = _template(tmp_path)
    store = FileTemplateStore(tmp_path)
    assert store.get("hello").bulk is False
    # WHEN a meta.json saying bulk is added
    (folder / "meta.json").write_text('{"bulk": true}', encoding="utf-8")
    # THEN the next get is bulk, and removing it makes the template transactional again
    assert store.get("hello").bulk is True
    (folder / "meta.json").unlink()
    assert store.get("hello").bulk is False


@pytest.mark.parametrize(
    ("meta", "problem"),
    [
        ('{"buk": true}', "unknown field 'buk'"),
        ('{"bulk": "yes"}', "must be a bool"),
        ('["bulk"]', "must hold a JSON object"),
        ("{bulk: true}", "is not JSON"),
    ],
)
def test_a_meta_json_that_could_be_misread_is_an_invalid_template(
    tmp_path: Path, meta: str, problem: str
) -> None:
    # GIVEN a meta.json with a misspelt key, a wrong type or no JSON object
    folder = _template(tmp_path)
    (folder / "meta.json").write_text(meta, encoding="utf-8")
    # THEN reading the template says what is wrong instead of sending without the flag
    with pytest.raises(InvalidTemplate, match=problem):
        FileTemplateStore(tmp_path).get("hello")


def test_meta_json_gives_a_tracking_default(tmp_path: Path) -> None:
    # GIVEN a file template whose meta.json tracks opens and not clicks
    folder = _template(tmp_path)
    (folder / "meta.json").write_text('{"tracking": {"opens": true, "clicks": false}}')
    # THEN the template carries that default (issue 21)
    assert FileTemplateStore(tmp_path).get("hello").tracking == (
        ("clicks", False),
        ("opens", True),
    )


@pytest.mark.parametrize(
    ("tracking", "problem"),
    [
        ('{"open": true}', "unknown field 'open'"),
        ('{"opens": "yes"}', "must be true or false"),
        ("true", "must be a dict"),
    ],
)
def test_a_tracking_default_that_could_be_misread_is_an_invalid_template(
    tmp_path: Path, tracking: str, problem: str
) -> None:
    folder = _template(tmp_path)
    (folder / "meta.json").write_text('{"tracking": ' + tracking + "}", encoding="utf-8")
    with pytest.raises(InvalidTemplate, match=problem):
        FileTemplateStore(tmp_path).get("hello")
