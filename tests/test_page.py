"""The page at /app, walked as a person does in Debian's headless Chromium (Selenium and
chromedriver), against gunicorn, the realtime process and a worker; then the same walk's core
through the shipped nginx configuration. Screenshots of each step go to
``test-artifacts/page/`` (``TEST_ARTIFACTS`` moves them)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from testkit.processes import ROOT, Server, free_port, start_gunicorn, start_realtime

ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", ROOT / "test-artifacts")) / "page"
AXE = ROOT / "tests" / "vendor" / "axe.min.js"
XSS = "<img src=x onerror=alert(1)>.txt"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.parametrize("stack", ["sqlite-fs"], indirect=True)


@dataclass
class Site:
    url: str
    api: Server
    realtime: Server


@pytest.fixture(params=["direct", "proxy"])
def site(request, clean_stack, tmp_path) -> Iterator[Site]:
    """The API and the realtime process of the README's local stack (REALTIME_URL names the
    realtime process), or both behind the shipped nginx configuration at one address."""
    from tests.test_front_proxy import start_nginx

    live = start_realtime(clean_stack.settings, tmp_path / "realtime.log")
    if request.param == "direct":
        api = start_gunicorn(clean_stack.settings, tmp_path / "api.log", REALTIME_URL=live.url)
        yield Site(api.url, api, live)
    else:
        api = start_gunicorn(clean_stack.settings, tmp_path / "api.log", TRUSTED_PROXY_COUNT="1")
        port = free_port()
        upstreams = [u.removeprefix("http://") for u in (api.url, live.url)]
        nginx = start_nginx(tmp_path, port, upstreams[0], realtime=upstreams[1])
        yield Site(f"http://127.0.0.1:{port}", api, live)
        nginx.terminate()
        nginx.wait(10)
    api.stop()
    live.stop()


def _chromium() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1280,1100")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(shutil.which("chromedriver") or "/usr/bin/chromedriver")
    return webdriver.Chrome(options=options, service=service)


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    driver = _chromium()
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


class Walk:
    """What a person does and sees, step by step, with a screenshot of each."""

    def __init__(self, driver: webdriver.Chrome, name: str) -> None:
        self.driver, self.name, self.step = driver, name, 0
        (ARTIFACTS / name).mkdir(parents=True, exist_ok=True)

    def shot(self, what: str) -> None:
        self.step += 1
        self.driver.save_screenshot(str(ARTIFACTS / self.name / f"{self.step:02d}-{what}.png"))

    def by_id(self, element_id: str):
        return self.driver.find_element(By.ID, element_id)

    def until(self, condition, timeout: float = 30, what: str = ""):
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(
                lambda _: condition()
            )
        except TimeoutException:
            self.shot("timed-out")
            raise AssertionError(f"timed out waiting for {what or condition}") from None

    def type_in(self, element_id: str, text: str) -> None:
        field = self.by_id(element_id)
        field.clear()
        field.send_keys(text)

    def rows(self) -> dict[str, dict[str, str]]:
        """The file table as a person reads it: name -> status, reason, tags, category (read in
        one go: rows are redrawn as events arrive)."""
        return self.driver.execute_script(
            """
            const found = {};
            for (const row of document.querySelectorAll("#file-rows tr")) {
              const field = (name) => row.querySelector(`input[data-field="${name}"]`).value;
              const reason = row.querySelector(".reason");
              found[field("Name")] = {
                status: row.querySelector("td:nth-child(3) span").textContent,
                reason: reason ? reason.textContent : "",
                tags: field("Tags"),
                category: field("Category"),
              };
            }
            return found;
            """
        )

    def errors(self) -> list[str]:
        """The error texts shown in the file table."""
        return self.driver.execute_script(
            "return [...document.querySelectorAll('#file-rows .error')]"
            ".map(e => e.textContent).filter(Boolean)"
        )

    def usage(self) -> str:
        return self.by_id("usage-text").text

    def visible(self, element_id: str) -> bool:
        return self.by_id(element_id).is_displayed()

    def announced(self) -> str:
        return self.by_id("announce").get_attribute("textContent")

    def axe(self) -> list[dict]:
        """axe-core's violations of serious or critical impact on the page as it is."""
        self.driver.execute_script(AXE.read_text())
        result = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document).then(r => done(JSON.stringify(r.violations)));"
        )
        return [v for v in json.loads(result) if v["impact"] in ("serious", "critical")]

    def no_alert(self) -> bool:
        try:
            self.driver.switch_to.alert  # noqa: B018 - raises when there is none
        except NoAlertPresentException:
            return True
        return False

    def refused_by_policy(self) -> list[str]:
        return [
            entry["message"]
            for entry in self.driver.get_log("browser")
            if "Content Security Policy" in entry["message"] or "Refused to" in entry["message"]
        ]


def _files(tmp_path: Path) -> dict[str, Path]:
    made = {}
    for name, body in (
        ("notes.txt", b"plain notes\n"),
        ("Отчёт за май.txt", "отчёт\n".encode()),
        ("photo.png", b"text bytes under a png name\n"),
        (XSS, b"hostile name\n"),
    ):
        path = tmp_path / "picked" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(body)
        made[name] = path
    return made


def _register(walk: Walk, url: str, name: str) -> None:
    walk.driver.get(url + "/app")
    walk.until(lambda: walk.visible("signed-out"), what="the sign-in page")
    walk.shot("signed-out")
    walk.type_in("register-name", name)
    walk.type_in("register-email", f"{name}@example.com")
    walk.type_in("register-password", "a long passphrase")
    walk.by_id("register").submit()
    walk.until(lambda: walk.visible("signed-in"), what="signed in")
    assert walk.by_id("username").text == name


def _upload(walk: Walk, *paths: Path) -> None:
    walk.by_id("picker").send_keys("\n".join(str(p) for p in paths))


def _settled(walk: Walk, names: list[str]) -> bool:
    rows = walk.rows()
    return all(rows.get(n, {}).get("status") in ("stored", "rejected") for n in names)


def test_a_person_walks_the_page(site, browser, clean_stack, tmp_path, request):
    walk = Walk(browser, request.node.callspec.params["site"])
    files = _files(tmp_path)
    _register(walk, site.url, "walker")
    walk.shot("signed-in")
    assert walk.axe() == []
    empty_usage = walk.usage()
    browser.execute_script("window.sameDocument = true")

    # Three files at once; the one with text bytes under a .png name is rejected, with why.
    three = ["notes.txt", "Отчёт за май.txt", "photo.png"]
    _upload(walk, *(files[n] for n in three))
    walk.until(lambda: _settled(walk, three), what="the three files settled")
    rows = walk.rows()
    assert {n: rows[n]["status"] for n in three} == {
        "notes.txt": "stored",
        "Отчёт за май.txt": "stored",
        "photo.png": "rejected",
    }
    assert "image/png" in rows["photo.png"]["reason"] or "png" in rows["photo.png"]["reason"]
    assert browser.execute_script("return window.sameDocument") is True  # never reloaded
    # Live files (the rejected one too) and the bytes of the two stored.
    walk.until(lambda: walk.usage().startswith("3 files, 23 B stored"), what="usage, uploads")
    assert empty_usage.startswith("0 files, 0 B stored")
    walk.shot("uploaded")

    # Search a Cyrillic name in another case.
    walk.type_in("q", "ОТЧЁТ")
    walk.by_id("filters").submit()
    walk.until(lambda: list(walk.rows()) == ["Отчёт за май.txt"], what="the search")
    walk.shot("searched")
    walk.type_in("q", "")
    walk.by_id("filters").submit()
    walk.until(lambda: len(walk.rows()) == 3, what="every file again")

    # Tag two in bulk, then filter by the tag.
    for name in ("notes.txt", "Отчёт за май.txt"):
        browser.find_element(By.CSS_SELECTOR, f'input[aria-label="Select {name}"]').click()
    assert walk.by_id("selected-count").text == "2 selected"
    walk.type_in("bulk-tags", "q3")
    walk.by_id("bulk-tag").click()
    walk.until(lambda: walk.rows().get("notes.txt", {}).get("tags") == "q3", what="tagged")
    walk.type_in("f-tag", "q3")
    walk.by_id("filters").submit()
    walk.until(lambda: sorted(walk.rows()) == ["notes.txt", "Отчёт за май.txt"], what="by tag")
    walk.shot("tagged")
    walk.type_in("f-tag", "")
    walk.by_id("filters").submit()
    walk.until(lambda: len(walk.rows()) == 3, what="every file again")

    # Rename one inline; a name that changes the type is refused in the API's words.
    # Typed over the selected name, as a person does: one change when the field is left
    # (clear() would send an empty name first, refused in words of its own).
    field = browser.find_element(By.CSS_SELECTOR, 'input[aria-label="Name of notes.txt"]')
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys("notes.pdf", Keys.TAB)
    refusal = walk.until(lambda: walk.errors(), what="the refusal")
    assert "extension" in refusal[0]  # the API's own words, next to the field
    walk.shot("rename-refused")
    field = browser.find_element(By.CSS_SELECTOR, 'input[aria-label="Name of notes.txt"]')
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys("minutes.txt", Keys.TAB)
    walk.until(lambda: "minutes.txt" in walk.rows(), what="the rename")
    walk.shot("renamed")

    # Delete one and see it go; usage follows.
    browser.find_element(By.CSS_SELECTOR, 'button[aria-label="Delete minutes.txt"]').click()
    walk.until(lambda: "minutes.txt" not in walk.rows(), what="the delete")
    walk.until(lambda: walk.usage().startswith("2 files, 11 B stored"), what="usage, delete")
    walk.shot("deleted")

    # A hostile file name is shown as exactly that, never run.
    _upload(walk, files[XSS])
    walk.until(lambda: walk.rows().get(XSS, {}).get("status") == "stored", what="the hostile")
    assert browser.find_elements(By.CSS_SELECTOR, "#files img, #transfers img") == []
    assert walk.no_alert()
    walk.shot("hostile-name")

    # An API key, shown once, listed by its name (hostile too), revoked.
    walk.type_in("key-name", "<b>backup</b>")
    walk.by_id("new-key").submit()
    walk.until(lambda: walk.by_id("key-value").text.startswith("upk_"), what="the new key")
    listed = walk.by_id("keys").text
    assert "<b>backup</b>" in listed and browser.find_elements(By.CSS_SELECTOR, "#keys b") == []
    walk.shot("key-created")
    browser.find_element(By.CSS_SELECTOR, 'button[aria-label="Revoke key <b>backup</b>"]').click()
    walk.until(lambda: walk.by_id("keys").text == "", what="the revoke")
    assert walk.axe() == []

    # A reload keeps the session (the refresh cookie); signing out ends it.
    browser.refresh()
    walk.until(lambda: walk.visible("signed-in"), what="signed in after a reload")
    walk.until(lambda: XSS in walk.rows(), what="the files after a reload")
    walk.shot("reloaded")
    walk.by_id("sign-out").click()
    walk.until(lambda: walk.visible("signed-out"), what="signed out")
    browser.refresh()
    walk.until(lambda: walk.visible("signed-out"), what="still signed out after a reload")
    walk.shot("signed-out-again")
    assert walk.axe() == []
    # Signing in with the keyboard alone: Tab to the field, type, Tab, type, Enter.
    keys = webdriver.ActionChains(browser)
    for _ in range(10):
        if browser.execute_script("return document.activeElement.id") == "login-name":
            break
        keys.send_keys(Keys.TAB).perform()
    assert browser.execute_script("return document.activeElement.id") == "login-name"
    keys.send_keys("walker", Keys.TAB, "a long passphrase", Keys.ENTER).perform()
    walk.until(lambda: walk.visible("signed-in"), what="signed in by keyboard")
    assert walk.refused_by_policy() == []


@pytest.mark.parametrize("site", ["direct"], indirect=True)  # the walk goes through nginx
def test_the_page_is_small_cached_and_locked_down(site):
    page = requests.get(site.url + "/app")
    assert page.status_code == 200
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self';" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert site.realtime.url in policy  # the realtime process at an address of its own
    assert page.headers["X-Frame-Options"] == "DENY"
    again = requests.get(site.url + "/app", headers={"If-None-Match": page.headers["ETag"]})
    assert again.status_code == 304
    assets = [
        part.split('"')[0]
        for part in page.text.split('="/app/static/')[1:]
        if part.split('"')[0].endswith((".js", ".css"))
    ]
    total = len(page.content)
    for asset in assets:
        reply = requests.get(f"{site.url}/app/static/{asset}")
        assert reply.status_code == 200
        assert "immutable" in reply.headers["Cache-Control"]
        total += len(reply.content)
    assert len(assets) == 2 and total < 100 * 1024  # first paint, uncompressed
    assert requests.get(site.url + "/app/static/app.0000.js").status_code == 404
