"""The live fleet page in a real browser (Debian's chromium, headless, driven by selenium)
against three standalone nodes: it asks for the token, shows the replicas and the leader,
a mission submitted through the API appears on it, a UAV is drawn where telemetry put it,
and when the leader is killed the replica panel shows the new one. Saves a screenshot
(UI_SCREENSHOT=path, else a temporary file)."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from bench.standalone_nodes import API_TOKEN, running_group


def _browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        if os.environ.get("CI"):
            pytest.fail("chromium/chromedriver missing: scripts/browser_deps.sh installs them")
        pytest.skip("SKIPPED LOUDLY: no chromium/chromedriver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,900",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def _until(what, condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture()
def group(tmp_path):
    with running_group(tmp_path) as nodes:
        yield nodes


def test_the_live_page_follows_the_fleet_and_the_leader(group, tmp_path):
    async def seed(sdk):
        await sdk.command({"type": "register_station", "station": "s1"})
        for i, (lat, lon) in enumerate([(47.40, 8.50), (47.42, 8.55), (47.38, 8.58)]):
            await sdk.command({"type": "register_uav", "uav": f"uav-{i}", "home_station": "s1", "lat": lat, "lon": lon})

    group.sdk(seed, via=["node_1"])
    leader = group.wait_for("a leader", group.leader)
    viewer = next(n for n in group.founders if n != leader)  # the page's node outlives the leader
    browser = _browser()
    try:
        browser.get(group.api_url(viewer) + "/ui")
        browser.find_element("id", "token").send_keys(API_TOKEN)
        browser.find_element("css selector", "#login button").click()
        replicas = lambda: browser.find_elements("css selector", "#replicas tbody tr")  # noqa: E731
        _until("three replicas on the page", lambda: len(replicas()) == 3)
        old_leader = _until(
            "a leader on the page", lambda: browser.find_element("id", "replicas").get_attribute("data-leader")
        )
        _until("the UAVs on the map", lambda: len(browser.find_elements("css selector", "#map circle.uav")) == 3)

        status, answer = group.api(
            viewer, "POST", "/v1/missions", {"mission": "m-ui", "waypoints": [{"lat": 47.41, "lon": 8.52, "alt": 50}]}
        )
        assert status == 201, answer
        mission_row = '[data-mission="m-ui"]'
        _until(
            "the mission on the page, pending or assigned",  # re-read: the table re-renders under us
            lambda: _safe(
                lambda: (
                    browser.find_element("css selector", mission_row).get_attribute("data-status")
                    in ("pending", "assigned")
                )
            ),
        )
        # A mission submitted and aborted from the page goes through the same API.
        browser.find_element("id", "mission-id").send_keys("m-page")
        browser.find_element("id", "mission-waypoints").send_keys("47.39,8.51,40")
        browser.find_element("css selector", "#submit-mission button").click()
        _until("the page's mission applied", lambda: group.api(viewer, "GET", "/v1/missions/m-page")[0] == 200)
        abort_button = '[data-mission="m-page"] button.abort'
        _until("its abort button", lambda: browser.find_elements("css selector", abort_button))[0].click()
        _until("the abort applied", lambda: group.api(viewer, "GET", "/v1/missions/m-page")[1]["status"] == "aborted")
        row = '[data-mission="m-page"]'
        _until(
            "the page to show it aborted",
            lambda: _safe(lambda: browser.find_element("css selector", row).get_attribute("data-status") == "aborted"),
        )

        def uav0_at():
            dot = browser.find_element("css selector", '#map circle[data-uav="uav-0"]')
            return dot.get_attribute("cx"), dot.get_attribute("cy")

        before = uav0_at()
        report = {"reports": [{"uav": "uav-0", "lat": 47.45, "lon": 8.60, "time": time.time(), "seq": 1}]}
        assert group.api(viewer, "POST", "/v1/stations/s1/telemetry", report)[0] == 200
        _until("uav-0 to move on the map", lambda: _safe(lambda: uav0_at() != before))

        group.kill(leader)
        new_leader = _until(
            "the replica panel to show the new leader",
            lambda: (
                (v := browser.find_element("id", "replicas").get_attribute("data-leader")) and v != old_leader and v
            ),
        )
        assert new_leader != old_leader
        assert len(browser.find_elements("css selector", "#leaders li")) >= 2  # the leader over time
        shot = os.environ.get("UI_SCREENSHOT") or str(tmp_path / "ui.png")
        assert browser.save_screenshot(shot)
        errors = [
            e
            for e in browser.get_log("browser")
            if e["level"] == "SEVERE" and "ERR_CONNECTION_REFUSED" not in e["message"]
        ]
        assert not errors, errors  # the page itself raised nothing
    finally:
        browser.quit()


def _safe(check):
    try:
        return check()
    except Exception:  # the map re-renders: an element may be replaced under us
        return False
