"""``/docs`` and ``/debug`` in a real browser: headless Chromium renders them from this server.

Chromium is Debian's ``chromium`` (``.ci/run`` installs it when it is missing); without it these
tests skip and say why. It runs with ``--dump-dom``: it loads the page, runs its scripts for up to
5 s of *virtual* time (timers fire without real waiting; time stops while a fetch is pending),
and prints the DOM as it then is, which the tests parse. Every host name but the loopback address
is made unresolvable, so a page that still needs a CDN fails here even on a machine with internet.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest
import trio

from .conftest import RunningServer

CHROMIUM_TIMEOUT_S = 60  # a cap for a stuck browser; a page takes 1 to 3 s on this machine
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-proxy-server", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--virtual-time-budget=5000",
)
# Elements without an end tag: they never hold text or children.
VOID_TAGS = frozenset(
    "area base br col embed hr img input link meta source track wbr".split()
)


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    children: list[Element | str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(
            child if isinstance(child, str) else child.text() for child in self.children
        )

    def find_all(self, tag: str, *, css_class: str | None = None) -> Iterator[Element]:
        """Descendants with this tag (and class), in document order."""
        for child in self.children:
            if isinstance(child, str):
                continue
            classes = (child.attrs.get("class") or "").split()
            if child.tag == tag and (css_class is None or css_class in classes):
                yield child
            yield from child.find_all(tag, css_class=css_class)

    def by_id(self, tag: str, element_id: str) -> Element:
        """The first descendant with this tag and ``id``."""
        return next(found for found in self.find_all(tag) if found.attrs.get("id") == element_id)


class DomBuilder(HTMLParser):
    """Chromium's serialized DOM as a tree of `Element`s (it closes every non-void element)."""

    def __init__(self) -> None:
        super().__init__()
        self.root = Element("#document", {})
        self._open = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {name: value or "" for name, value in attrs})
        self._open[-1].children.append(element)
        if tag not in VOID_TAGS:
            self._open.append(element)

    def handle_endtag(self, tag: str) -> None:
        if tag not in VOID_TAGS and len(self._open) > 1:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        self._open[-1].children.append(data)


def parse_dom(html: str) -> Element:
    builder = DomBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


@pytest.fixture
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.skip(
            "Debian's chromium is not installed (.ci/run installs it with apt-get when apt "
            "is available)"
        )
    return path


async def dump_dom(chromium: str, url: str, profile: Path) -> Element:
    """Load ``url`` in headless Chromium and return the DOM its scripts leave.

    Chromium runs in a process group of its own; on timeout or cancel the whole group (browser,
    renderer, GPU and utility processes) is killed.
    """

    async def kill_group(process: trio.Process) -> None:
        os.killpg(process.pid, signal.SIGKILL)

    command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url]
    with trio.fail_after(CHROMIUM_TIMEOUT_S):
        result = await trio.run_process(
            command, capture_stdout=True, capture_stderr=True, check=False,
            start_new_session=True, deliver_cancel=kill_group,
        )
    stderr_tail = result.stderr.decode(errors="replace")[-2000:]
    assert result.returncode == 0, f"chromium exited {result.returncode}: {stderr_tail}"
    return parse_dom(result.stdout.decode())


async def test_docs_renders_every_documented_operation_with_no_internet(
    chromium: str, server: RunningServer, tmp_path: Path
) -> None:
    async with server.client() as client:
        spec = (await client.get("/openapi.json")).json()
    documented = {
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        for method in operations
    }

    dom = await dump_dom(chromium, f"{server.url}/docs", tmp_path)

    rendered = set()
    for summary in dom.find_all("div", css_class="opblock-summary"):
        method = next(summary.find_all("span", css_class="opblock-summary-method")).text()
        path = next(summary.find_all("span", css_class="opblock-summary-path")).text()
        rendered.add((method.strip(), path.strip()))
    assert ("POST", "/api/chat") in rendered
    assert ("GET", "/chat/{trace_id}/response") in rendered
    assert rendered == documented


async def test_debug_renders_the_actors_table_with_the_session_of_a_turn(
    chromium: str, server: RunningServer, tmp_path: Path
) -> None:
    async with server.client() as client:
        turn = await client.post("/api/chat", json={"prompt": "hello from the browser test"})
    assert turn.status_code == 200
    session_id = turn.cookies["sessionId"].split(".")[0]

    dom = await dump_dom(chromium, f"{server.url}/debug", tmp_path)

    status = dom.by_id("div", "status")
    table = dom.by_id("table", "actors")
    headers = [cell.text() for cell in table.find_all("th")]
    rows = [
        dict(zip(headers, (cell.text() for cell in row.find_all("td")), strict=True))
        for body in table.find_all("tbody")
        for row in body.find_all("tr")
    ]
    assert status.text().startswith("showing "), status.text()
    sessions = [row for row in rows if row["kind"] == "session"]
    assert [row["key"] for row in sessions] == [session_id]
    assert sessions[0]["handled"] == "1"
