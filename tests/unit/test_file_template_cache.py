"""File templates are read once and re-read when a file changes (adapters/templates.py)."""

from __future__ import annotations

import os
from pathlib import Path

from mailroom.adapters.templates import FileTemplateStore


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
