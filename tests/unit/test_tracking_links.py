"""Link rewriting for open and click tracking (issue 21): the edge cases."""

from __future__ import annotations

import itertools
from html.parser import HTMLParser

import pytest

from mailroom.domain.tracking import (
    MAX_TRACKED_URL,
    LinkKind,
    LinkPolicy,
    TrackingChoice,
    resolve_choice,
    track_html,
)

BASE = "https://track.example.com"
BOTH = TrackingChoice(opens=True, clicks=True)
CLICKS = TrackingChoice(opens=False, clicks=True)


def sequential() -> object:
    counter = itertools.count()
    return lambda: f"tok{next(counter):019d}"


def rewrite(html: str, choice: TrackingChoice = CLICKS, **policy: object):  # type: ignore[no-untyped-def]
    return track_html(html, choice, LinkPolicy(BASE, **policy), token=sequential())  # type: ignore[arg-type]


class Hrefs(HTMLParser):
    def __init__(self, html: str) -> None:
        super().__init__()
        self.hrefs: list[str | None] = []
        self.images: list[str | None] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # The hidden honeypot link is not one of the content's.
        if tag == "a" and dict(attrs).get("aria-hidden") != "true":
            self.hrefs.append(dict(attrs).get("href"))
        if tag == "img":
            self.images.append(dict(attrs).get("src"))


def test_an_http_link_points_at_the_redirect_and_its_url_is_stored_decoded() -> None:
    # GIVEN a link whose query string is written with &amp; as HTML requires
    html = '<p><a href="https://shop.example/a?x=1&amp;y=2">Buy</a></p>'
    # WHEN the HTML is rewritten for clicks
    tracked = rewrite(html)
    # THEN the link points at /c/{token}, and the stored URL is the real one
    assert Hrefs(tracked.html).hrefs == [f"{BASE}/c/tok0000000000000000000"]
    click = tracked.links[0]
    assert click.kind is LinkKind.CLICK
    assert click.link_index == 0
    assert click.url == "https://shop.example/a?x=1&y=2"


def test_entities_in_a_url_are_decoded_once_and_other_attributes_kept() -> None:
    html = "<a class=\"btn\" title='Say &quot;hi&quot;' href='https://e.example/&#x3F;q=&lt;b&gt;'>x</a>"
    tracked = rewrite(html)
    assert tracked.links[0].url == "https://e.example/?q=<b>"
    parser = Hrefs(tracked.html)
    assert parser.hrefs == [f"{BASE}/c/tok0000000000000000000"]
    assert 'class="btn"' in tracked.html
    assert 'title="Say &quot;hi&quot;"' in tracked.html


@pytest.mark.parametrize(
    "href",
    [
        "mailto:ada@example.com",
        "tel:+441234567",
        "/relative/path",
        "relative.html",
        "#top",
        "javascript:alert(1)",
        "ftp://files.example/x",
        "https://",
        "http://[::1",  # urlsplit refuses it
        f"{BASE}/c/alreadytrackedtoken0001",
        f"{BASE}/u/unsubscribe-token",
        "https://lists.example/unsubscribe?id=4",
        "https://partner.example/page",
        "https://www.partner.example/page",
        "https://example.com/" + "a" * MAX_TRACKED_URL,
        "https://e.example/&#13;&#10;Set-Cookie: a=b",  # decodes to CR LF: no Location injection
        "https://e.example/a b",
    ],
)
def test_links_that_are_left_alone(href: str) -> None:
    # GIVEN a link that must not be tracked (and an excluded domain)
    html = f'<a href="{href}">x</a>'
    # WHEN the HTML is rewritten
    tracked = rewrite(html, excluded_domains=frozenset({"partner.example"}))
    # THEN it is untouched and nothing is stored for it
    assert tracked.html == html
    assert tracked.links == ()


def test_the_messages_own_unsubscribe_url_is_left_alone() -> None:
    html = '<a href="https://acme.example/prefs">preferences</a>'
    tracked = rewrite(html, unsubscribe_url="https://acme.example/prefs")
    assert tracked.html == html


def test_a_marked_link_is_left_alone_and_loses_its_marker() -> None:
    html = '<a data-mr-notrack href="https://e.example/x">x</a> <a href="https://e.example/y">y</a>'
    tracked = rewrite(html)
    hrefs = Hrefs(tracked.html).hrefs
    assert hrefs == ["https://e.example/x", f"{BASE}/c/tok0000000000000000000"]
    assert "data-mr-notrack" not in tracked.html
    assert [link.url for link in tracked.links if link.kind is LinkKind.CLICK] == [
        "https://e.example/y"
    ]


def test_links_in_comments_scripts_and_text_are_not_links() -> None:
    # GIVEN "links" that a regex would find but a tokenizer does not
    html = (
        '<!-- <a href="https://c.example">old</a> -->'
        "<script>var s = '<a href=\"https://s.example\">';</script>"
        "<p>Visit https://plain.example today</p>"
    )
    # WHEN rewritten THEN nothing changes
    assert rewrite(html).html == html


def test_every_byte_outside_rewritten_tags_is_kept() -> None:
    html = (
        "<!doctype html>\n<html><head><style>a{color:red}</style></head>\n"
        "<body>\n  <p>Caf&eacute; &amp; co</p>\n"
        '  <A HREF="HTTPS://E.EXAMPLE/Up">u</A>\n'
        '  <a href="https://e.example/self"/>\n</body></html>'
    )
    tracked = rewrite(html)
    expected = html.replace(
        '<A HREF="HTTPS://E.EXAMPLE/Up">', f'<a href="{BASE}/c/tok0000000000000000000">'
    ).replace('<a href="https://e.example/self"/>', f'<a href="{BASE}/c/tok0000000000000000001" />')
    honeypot = (
        f'<a href="{BASE}/c/tok0000000000000000002" style="display:none" '
        'aria-hidden="true" tabindex="-1"></a>'
    )
    expected = expected.replace("</body>", f"{honeypot}</body>")
    assert tracked.html == expected
    assert [link.url for link in tracked.links[:2]] == [
        "HTTPS://E.EXAMPLE/Up",
        "https://e.example/self",
    ]


def test_the_pixel_goes_before_the_body_end_or_at_the_end() -> None:
    with_body = rewrite("<html><body><p>hi</p></body></html>", BOTH)
    assert with_body.html.endswith("</body></html>")
    assert Hrefs(with_body.html).images == [f"{BASE}/t/tok0000000000000000000.gif"]
    fragment = rewrite("<p>hi</p>", TrackingChoice(opens=True))
    assert fragment.html.startswith("<p>hi</p><img ")
    assert [link.kind for link in fragment.links] == [LinkKind.OPEN]


def test_a_hidden_honeypot_link_comes_with_tracked_clicks_only() -> None:
    tracked = rewrite('<a href="https://e.example/">x</a>')
    kinds = [link.kind for link in tracked.links]
    assert kinds == [LinkKind.CLICK, LinkKind.HONEYPOT]
    assert 'style="display:none"' in tracked.html
    assert rewrite('<a href="mailto:a@b.example">x</a>').links == ()


def test_nothing_tracked_leaves_the_html_as_it_is() -> None:
    html = '<a href="https://e.example/">x</a>'
    tracked = track_html(html, TrackingChoice(), LinkPolicy(BASE))
    assert tracked.html == html
    assert tracked.links == ()


def test_real_tokens_are_random_and_url_safe() -> None:
    tracked = track_html('<a href="https://e.example/">x</a>', BOTH, LinkPolicy(BASE))
    assert len({link.token for link in tracked.links}) == 3
    assert all(len(link.token) == 22 for link in tracked.links)


def test_the_message_overrides_the_default_both_ways() -> None:
    on = TrackingChoice(opens=True, clicks=True)
    assert resolve_choice(None, on) == on
    assert resolve_choice({"opens": False}, on) == TrackingChoice(opens=False, clicks=True)
    assert resolve_choice({"clicks": True}) == TrackingChoice(opens=False, clicks=True)
