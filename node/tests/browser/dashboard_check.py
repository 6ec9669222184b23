"""Drives the web dashboard of a live cluster in headless Chromium and checks what it shows.

1. The page asks for an admin token (auth is on) and shows no data before one is given.
2. With the token it shows the members, roles and leader, the namespaces' usage, the topics
   with their consumer groups and lag, and the services with their nodes: each checked against
   the node's own JSON API, fetched with the same token.
3. A screenshot is taken.
4. It prints `READY_FOR_LEADER_CHANGE` and waits for a line on standard input (the test kills
   the leader meanwhile); then the same page, never reloaded, must show a new leader that the
   API agrees on, and the old leader as unreachable, within 30 s. A second screenshot.

Run by node/tests/it/dashboard.rs, which starts the cluster.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

TIMEOUT_S = 30.0


def api(url: str, token: str) -> dict[str, Any]:
    request = urllib.request.Request(url, headers={"authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        view: dict[str, Any] = json.load(response)
    return view


def wait_for(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    last_error = ""
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as error:  # noqa: BLE001 (a page mid-update: look again)
            last_error = repr(error)
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} {last_error}")


def text(driver: WebDriver, testid: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, f'[data-testid="{testid}"]').text)


def rows(driver: WebDriver, testid: str) -> list[dict[str, str]]:
    found = []
    for element in driver.find_elements(By.CSS_SELECTOR, f'tr[data-testid="{testid}"]'):
        attributes = driver.execute_script(  # type: ignore[no-untyped-call]
            "const a = {}; for (const x of arguments[0].attributes) a[x.name] = x.value; return a;",
            element,
        )
        found.append({str(k): str(v) for k, v in attributes.items()})
    return found


def shown_matches_api(driver: WebDriver, view: dict[str, Any]) -> bool:
    """Whether the page shows exactly what the API says (members, namespaces, topics,
    groups, services)."""
    if text(driver, "leader") != str(view["leader_id"]):
        return False
    members = {r["data-node-id"]: r["data-role"] for r in rows(driver, "member")}
    if members != {str(m["node_id"]): m["role"] for m in view["members"]}:
        return False
    namespaces = {r["data-namespace"]: r["data-keys"] for r in rows(driver, "namespace")}
    if namespaces != {n["namespace"]: str(n["usage"]["keys"]) for n in view["namespaces"]}:
        return False
    topics = {r["data-topic"]: r["data-messages"] for r in rows(driver, "topic")}
    expected_topics = {f"{t['namespace']}/{t['topic']}": str(t["messages"]) for t in view["topics"]}
    if topics != expected_topics:
        return False
    groups = {(r["data-topic"], r["data-group"]): r["data-lag"] for r in rows(driver, "group")}
    expected_groups = {
        (f"{t['namespace']}/{t['topic']}", g["group"]): str(g["lag"])
        for t in view["topics"]
        for g in t["groups"]
    }
    if groups != expected_groups:
        return False
    services = {r["data-service"]: r["data-nodes"] for r in rows(driver, "service")}
    expected_services = {
        f"{s['namespace']}/{s['service']}": str(len(s["nodes"])) for s in view["services"]
    }
    return services == expected_services


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", required=True, help="host:port of the node's HTTP port")
    parser.add_argument("--token", required=True, help="a super admin's access token")
    parser.add_argument("--screenshots", required=True, help="directory for the screenshots")
    parser.add_argument("--expect-topic", required=True, help="namespace/topic shown with a group")
    parser.add_argument("--expect-service", required=True, help="namespace/service shown")
    args = parser.parse_args()
    page = f"http://{args.http}/dashboard"
    endpoint = f"http://{args.http}/api/v1/dashboard"

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    try:
        driver.get(page)
        # Auth is on: a token is asked for, and nothing is shown without one.
        wait_for(
            "the token prompt",
            lambda: driver.find_element(By.ID, "login").is_displayed(),
        )
        if rows(driver, "member") or text(driver, "leader") != "–":
            raise AssertionError("the page showed cluster data without a token")
        driver.find_element(By.ID, "token").send_keys(args.token)
        driver.find_element(By.ID, "use-token").click()
        wait_for(
            "the page to match the API",
            lambda: shown_matches_api(driver, api(endpoint, args.token)),
        )
        view = api(endpoint, args.token)
        if not any(
            f"{t['namespace']}/{t['topic']}" == args.expect_topic and t["groups"]
            for t in view["topics"]
        ):
            raise AssertionError(f"the API shows no {args.expect_topic} with a group: {view}")
        if not any(
            f"{s['namespace']}/{s['service']}" == args.expect_service for s in view["services"]
        ):
            raise AssertionError(f"the API shows no service {args.expect_service}: {view}")
        if driver.find_element(By.ID, "login").is_displayed():
            raise AssertionError("the token prompt is still shown")
        first = f"{args.screenshots}/dashboard.png"
        if not driver.save_screenshot(first):
            raise AssertionError("no screenshot")
        old_leader = str(view["leader_id"])

        print("READY_FOR_LEADER_CHANGE", flush=True)
        sys.stdin.readline()

        def followed() -> bool:
            now = api(endpoint, args.token)
            leader = text(driver, "leader")
            old = [r for r in rows(driver, "member") if r["data-node-id"] == old_leader]
            return (
                leader not in (old_leader, "none", "–")
                and str(now["leader_id"]) == leader
                and bool(old)
                and old[0]["data-health"] == "down"
                and shown_matches_api(driver, now)
            )

        wait_for("the page to follow the leader change", followed)
        driver.save_screenshot(f"{args.screenshots}/dashboard-after.png")
        print(
            json.dumps({"old_leader": old_leader, "new_leader": text(driver, "leader")}),
            flush=True,
        )
    finally:
        driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
