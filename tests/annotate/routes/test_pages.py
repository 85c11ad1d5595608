"""The pages, over HTTP (login, cookies, CSRF) and in real headless Chromium (Debian's
`chromium`, driven by the Python `playwright` package with that executable: Playwright's own
browser download does not work here). The browser test logs in, labels three tasks with the
keyboard, watches the progress move, and checks that an HTML-laden response is shown as text.
"""

from __future__ import annotations

import shutil

import httpx
import pytest

from rlhfkit.annotate import security
from tests.annotate.conftest import pairs, running_team

HOSTILE = (
    '<script>window.__pwned = "script"</script><img src=x onerror="window.__pwned = \'img\'">'
    "<b>bold?</b> & done"
)


def login(team, name: str) -> httpx.Client:
    client = team.client(follow_redirects=False)
    r = client.post("/login", data={"token": team.tokens[name]})
    assert r.status_code == 303, r.text
    return client


def test_login_sets_a_strict_httponly_cookie_and_pages_need_it(sqlite_url, tmp_path):
    with running_team(tmp_path, sqlite_url, pairs(3)) as team:
        anonymous = team.client(follow_redirects=False)
        for page in ("/label", "/guidelines", "/admin"):
            assert anonymous.get(page).headers["location"] == "/login"
        bad = anonymous.post("/login", data={"token": "rlk_nope"})
        assert bad.status_code == 401 and "not valid" in bad.text
        r = anonymous.post("/login", data={"token": team.tokens["ann1"]})
        assert r.status_code == 303 and r.headers["location"] == "/label"
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        page = anonymous.get("/label")
        assert page.status_code == 200
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert '<script src="/static/label.js"' in page.text and "<script>" not in page.text
        assert anonymous.get("/admin").status_code == 403  # not an admin
        admin = login(team, "admin")
        dashboard = admin.get("/admin")
        assert dashboard.status_code == 200
        for section in ("Progress", "Calibration gate", "Agreement", "Annotators", "Drift alerts"):
            assert section in dashboard.text
        assert "0 of 3 items have 2 labels" in dashboard.text


def test_cookie_requests_that_change_state_need_the_csrf_token(sqlite_url, tmp_path):
    with running_team(tmp_path, sqlite_url, pairs(3), calibration_size=2) as team:
        browser = login(team, "ann1")
        task = browser.get("/api/tasks/next").json()  # reading needs no token
        body = {"task_id": task["task_id"], "choice": "first", "client_id": "c1"}
        assert browser.post("/api/labels", json=body).status_code == 403
        wrong = browser.post("/api/labels", json=body, headers={"X-CSRF-Token": "0" * 64})
        assert wrong.status_code == 403
        secret = _secret(team)
        token = security.csrf_token(secret, security.hash_token(team.tokens["ann1"]))
        ok = browser.post("/api/labels", json=body, headers={"X-CSRF-Token": token})
        assert ok.status_code == 201
        # Another site's form cannot log someone in either (login CSRF).
        cross = team.client(follow_redirects=False).post(
            "/login", data={"token": team.tokens["ann1"]}, headers={"Origin": "https://evil.test"}
        )
        assert cross.status_code == 403
        # The logout form carries the token too.
        assert browser.post("/logout", data={"csrf": "x"}).status_code == 403
        assert browser.post("/logout", data={"csrf": token}).status_code == 303
        # The dashboard's override form: admin, CSRF token and a reason, then recorded.
        admin = login(team, "admin")
        admin_csrf = security.csrf_token(secret, security.hash_token(team.tokens["admin"]))
        form = {"csrf": admin_csrf, "reason": "deadline: agreed in the team meeting"}
        assert browser.post("/admin/override", data=form).status_code == 403  # logged out
        assert admin.post("/admin/override", data=form | {"csrf": "x"}).status_code == 403
        assert admin.post("/admin/override", data=form | {"reason": " "}).status_code == 422
        assert admin.post("/admin/override", data=form).status_code == 303
        page = admin.get("/admin").text
        assert "overridden" in page and "deadline: agreed in the team meeting" in page


def _secret(team) -> str:
    from rlhfkit.annotate import open_store

    store = open_store(team.db)
    store.close()
    return store.secret


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("needs Debian's chromium (apt-get install -y chromium; `make test` does)")
    return path


@pytest.mark.slow
def test_labeling_in_headless_chromium(sqlite_url, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = _chromium()
    items = pairs(5)
    items[0]["response_b"] = HOSTILE
    items[0]["prompt"] = "<h1>Is this a heading?</h1>"
    with running_team(tmp_path, sqlite_url, items, overlap=1) as team:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page()
            dialogs = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(f"{team.base_url}/login")
            page.fill("#token", team.tokens["ann1"])
            page.click("button[type=submit]")
            page.wait_for_url("**/label")
            page.wait_for_selector("#task:not([hidden])")
            # `expect`, not wait_for_function: polling a JS string needs eval, which the page's
            # CSP (script-src 'self') rightly refuses whenever the first check comes too early
            expect = playwright.expect
            # Labels given, anchors counted alike; no count of what is left (it would tell
            # anchors apart: tests/annotate/test_anchor_secrecy.py)
            expect(page.locator("#progress-text")).to_have_text("0 pairs labeled")

            # The first task is the hostile one (items are handed out in order).
            shown = page.text_content("#first") + page.text_content("#second")
            assert HOSTILE in shown
            assert page.text_content("#prompt") == "<h1>Is this a heading?</h1>"
            assert page.evaluate("window.__pwned") is None
            assert (
                page.evaluate(
                    "document.querySelectorAll('#task script, #task img, #task b, #task h1').length"
                )
                == 0
            )
            page.screenshot(path=str(tmp_path / "label.png"), full_page=True)

            for n in range(1, 4):
                prompt = page.text_content("#prompt")
                page.keyboard.press("1" if n % 2 else "2")
                assert page.get_attribute("#choices button.selected", "data-choice") in (
                    "first",
                    "second",
                )
                page.keyboard.press("Enter")
                expect(page.locator("#prompt")).not_to_have_text(prompt)
                shown = f"{n} pair{'' if n == 1 else 's'} labeled"
                expect(page.locator("#progress-text")).to_have_text(shown)
            assert page.evaluate("window.__pwned") is None and not dialogs

            page.goto(f"{team.base_url}/guidelines")
            assert "Borderline examples" in page.text_content("main")
            browser.close()
        me = team.client("ann1").get("/api/me").json()
        assert me["labels"] == 3
