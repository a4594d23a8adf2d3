"""An HTML5 well-formedness check on Python's html.parser (and html5lib's strict parser when it
is installed): doctype, one html/head/body, balanced tags, no void element closed, no block
inside a paragraph, unique ids, nothing loaded (links to files next to the page are fine)."""

from __future__ import annotations

from collections import Counter
from html.parser import HTMLParser

VOID = {
    "area",
    "base",
    "br",
    "col",
    "embed",
    "hr",
    "img",
    "input",
    "link",
    "meta",
    "source",
    "track",
    "wbr",
}
BLOCK = {"div", "table", "section", "ul", "ol", "p", "h1", "h2", "h3", "h4", "details", "nav"}
SVG_NS = "http://www.w3.org/2000/svg"


def _local_link(tag: str, href: str) -> bool:
    """A link a reader follows to a file next to the page (or an anchor): never fetched."""
    return tag == "a" and ":" not in href and not href.startswith("//")


class _Checker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.ids: Counter[str] = Counter()
        self.tags: Counter[str] = Counter()
        self.doctype: str | None = None

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def _attrs(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if "svg" not in self.stack:  # SVG has its own <title>
            self.tags[tag] += 1
        for name, value in attrs:
            if name == "id" and value:
                self.ids[value] += 1
            if name == "src" or (name == "href" and value and not _local_link(tag, value)):
                self.errors.append(f"<{tag} {name}={value!r}> loads something")
            if name == "xmlns" and value != SVG_NS:
                self.errors.append(f"unexpected namespace {value!r}")
        if tag in ("script", "iframe", "object", "img", "link"):
            self.errors.append(f"<{tag}> in a self-contained report")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._attrs(tag, attrs)
        if tag in BLOCK and "p" in self.stack and "svg" not in self.stack:
            self.errors.append(f"<{tag}> inside <p>")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._attrs(tag, attrs)
        if tag not in VOID and "svg" not in self.stack:
            self.errors.append(f"<{tag}/> self-closed outside SVG")

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            self.errors.append(f"</{tag}> closes a void element")
        elif not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> does not close {self.stack[-1:]}")
        else:
            self.stack.pop()


def html5_errors(text: str) -> list[str]:
    """Every problem found (empty when the page is well-formed HTML5)."""
    checker = _Checker()
    checker.feed(text)
    checker.close()
    errors = list(checker.errors)
    if checker.doctype is None or checker.doctype.lower() != "doctype html":
        errors.append(f"doctype is {checker.doctype!r}")
    if checker.stack:
        errors.append(f"unclosed {checker.stack}")
    for tag in ("html", "head", "body", "title", "main"):
        if checker.tags[tag] != 1:
            errors.append(f"{checker.tags[tag]} <{tag}> elements")
    errors += [f"id {i!r} used {n} times" for i, n in checker.ids.items() if n > 1]
    if '<meta charset="utf-8">' not in text:
        errors.append("no charset")
    try:
        import html5lib  # type: ignore[import-untyped]
    except ImportError:  # optional: the checks above always run
        return errors
    try:
        html5lib.HTMLParser(strict=True).parse(text)
    except Exception as exc:  # html5lib raises ParseError with the position
        errors.append(f"html5lib: {exc}")
    return errors


def section_ids(text: str) -> set[str]:
    """The ids of the page's elements."""
    checker = _Checker()
    checker.feed(text)
    return set(checker.ids)
