"""The status page in a real headless Chromium (Debian's ``chromium``), against the
simulator and the exporter as processes.

What a person sees is read through the browser (the DOM after Chromium has parsed and
laid out the page), never by parsing the HTML here: the counts and quota must be the
ones /metrics gives, hostile job names must be text that runs nothing (Chromium's
dialog event proves it, and a positive control proves the event is seen), the layout
must fit a phone, and the page must ask for the password when basic auth is on.

Screenshots at 1280 px and 390 px are kept as test artefacts: in ``$FT_TEST_ARTIFACTS``
when set, else in the test's temporary directory. With ``FT_UPDATE_SCREENSHOTS=1`` they
are also written to docs/ for the README.
"""

from __future__ import annotations

import base64
import os
import ssl
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from browser import Chromium
from certs import Pki, tls_yaml
from conftest import (
    ROOT,
    UTC8,
    Exporter,
    Simulator,
    basic_credentials,
    http_get,
    http_json,
    require_tool,
    samples,
    value,
)

from ft_exporter.model import TERMINAL_STATUSES

# One browser at a time across xdist workers: each is a few hundred MB.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("chromium")]

ARTIFACTS_ENV = "FT_TEST_ARTIFACTS"
UPDATE_ENV = "FT_UPDATE_SCREENSHOTS"
DESKTOP, PHONE = 1280, 390
#: The height of the phone screenshot in docs/.
PHONE_SCREEN = 1100
SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
USER = "prometheus"
PASSWORD = "s3cret-Status-pa55"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Chromium]:
    exe = require_tool("chromium")
    chromium = Chromium(exe, tmp_path / "chromium-profile", tmp_path / "chromium.log")
    yield chromium
    chromium.close()


@pytest.fixture
def artefacts(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """Where this test's screenshots go."""
    root = os.environ.get(ARTIFACTS_ENV)
    where = Path(root) / request.node.name if root else tmp_path / "screenshots"
    where.mkdir(parents=True, exist_ok=True)
    return where


def start_exporter(
    factory: Callable[..., Exporter], simulator: Simulator, *args: str, **kw: Any
) -> Exporter:
    """A sweep at start and none for a minute: the page's own refresh (the
    poll interval) must not reload it under the test's feet."""
    return factory(
        [f"--dashscope.base-url={simulator.url}", "--poll.interval=1m", *args],
        env={"DASHSCOPE_API_KEY": simulator.key},
        **kw,
    )


def add_running_jobs(simulator: Simulator) -> None:
    """Two jobs created in the last hours, RUNNING, with a few records in their logs."""
    now = datetime.now(UTC8)
    jobs = [
        (
            "ft-run-1",
            "support-bot-v3",
            "qwen3-8b",
            3,
            now - timedelta(hours=2),
            [
                "{'loss': 0.61, 'learning_rate': 1.2e-05, 'epoch': 1.0}",
                "{'eval_loss': 0.51, 'epoch': 1.0}",
                "{'loss': 0.42, 'learning_rate': 9e-06, 'epoch': 1.8}",
            ],
        ),
        (
            "ft-run-2",
            "summariser-zh",
            "qwen3-14b",
            2,
            now - timedelta(minutes=40),
            [
                "{'loss': 1.12, 'learning_rate': 1.5e-05, 'epoch': 0.5}",
            ],
        ),
    ]
    http_json(
        simulator.url + "/_sim/jobs",
        "POST",
        {
            "jobs": [
                {
                    "job_id": job_id,
                    "job_name": name,
                    "status": "RUNNING",
                    "model": model,
                    "base_model": model,
                    "training_type": "sft",
                    "create_time": created.strftime("%Y-%m-%d %H:%M:%S"),
                    "hyper_parameters": {"n_epochs": epochs},
                }
                for job_id, name, model, epochs, created, _ in jobs
            ]
        },
    )
    for job_id, *_, lines in jobs:
        http_json(simulator.url + "/_sim/logs", "POST", {"job_id": job_id, "lines": lines})


def pixel_variety(browser: Chromium, png: bytes) -> dict[str, float]:
    """Size, distinct colours and the share of pixels unlike the top-left one, counted by
    the browser itself (decoded into a canvas on a blank page)."""
    browser.navigate("about:blank")
    data = base64.b64encode(png).decode()
    got: dict[str, float] = browser.evaluate(
        f"""(async () => {{
            const img = new Image();
            img.src = "data:image/png;base64,{data}";
            await img.decode();
            const canvas = document.createElement("canvas");
            canvas.width = img.width;
            canvas.height = img.height;
            const ctx = canvas.getContext("2d");
            ctx.drawImage(img, 0, 0);
            const d = ctx.getImageData(0, 0, img.width, img.height).data;
            const colours = new Set();
            const bg = (d[0] << 16) | (d[1] << 8) | d[2];
            let unlike = 0;
            for (let i = 0; i < d.length; i += 4) {{
                const v = (d[i] << 16) | (d[i + 1] << 8) | d[i + 2];
                colours.add(v);
                if (v !== bg) unlike++;
            }}
            return {{width: img.width, height: img.height, colours: colours.size,
                     unlike: unlike / (d.length / 4)}};
        }})()""",
        await_promise=True,
    )
    return got


def shoot(browser: Chromium, url: str, width: int, path: Path) -> bytes:
    browser.set_width(width, 900, mobile=width < 600)
    browser.navigate(url)
    return browser.screenshot(path)


def dom_figures(browser: Chromium) -> dict[str, Any]:
    """The quota and job counts as the page shows them, read from the DOM."""
    figures: dict[str, Any] = browser.evaluate(
        """(() => {
            const account = document.querySelector("#account-1");
            const text = (sel) => account.querySelector(sel).textContent;
            const chips = (cell) => Object.fromEntries(
                [...cell.querySelectorAll(".st")].map(
                    (c) => [c.dataset.status, Number(c.querySelector("b").textContent)]));
            const byModel = {};
            for (const row of account.querySelectorAll("table.counts tbody tr")) {
                byModel[row.querySelector("th").textContent] = chips(row);
            }
            return {
                used: Number(text(".quota-used")),
                limit: Number(text(".quota-limit")),
                room: text(".room"),
                total: Number(text(".jobs-total")),
                byModel: byModel,
                totals: chips(account.querySelector("table.counts td.totals")),
                active: account.querySelectorAll("table.active tbody tr").length,
                names: [...account.querySelectorAll("table.rows td.first")].map(
                    (td) => td.textContent),
                training: [...account.querySelectorAll("table.active tbody tr")].map(
                    (tr) => [0, 4, 5].map((i) => tr.children[i].textContent)),
            };
        })()"""
    )
    return figures


def metrics_figures(exp: Exporter) -> dict[str, Any]:
    """The same figures computed from /metrics (summed over training types)."""
    text = exp.metrics()
    by_model: dict[str, dict[str, int]] = defaultdict(dict)
    totals: dict[str, int] = defaultdict(int)
    for (name, labels), count in samples(text).items():
        if name != "dashscope_finetune_jobs" or not count:
            continue
        label = dict(labels)
        model, status = label["model"], label["status"]
        by_model[model][status] = by_model[model].get(status, 0) + int(count)
        totals[status] += int(count)
    used = value(text, "dashscope_finetune_quota_used_jobs", account="default")
    limit = value(text, "dashscope_finetune_quota_limit_jobs", account="default")
    assert used is not None and limit is not None
    return {
        "used": int(used),
        "limit": int(limit),
        "total": sum(totals.values()),
        "byModel": dict(by_model),
        "totals": dict(totals),
        "active": sum(n for s, n in totals.items() if s not in TERMINAL_STATUSES),
    }


def test_screenshots_and_the_dom_show_what_metrics_shows(
    browser: Chromium,
    simulator: Simulator,
    exporter_factory: Callable[..., Exporter],
    artefacts: Path,
) -> None:
    # The static account, and two runs with training logs (progress and loss); one failed
    # (and retried) request, so that the screenshots show the recent-errors list too.
    add_running_jobs(simulator)
    simulator.fault("throttle", count=1)
    exp = start_exporter(exporter_factory, simulator)
    page = http_get(exp.url + "/")[1]
    assert b"Throttling" in page
    assert b"0.42 / 0.51" in page
    assert b'<meta http-equiv="refresh" content="60">' in page
    shots = {}
    for width, name in ((DESKTOP, "status-page-desktop.png"), (PHONE, "status-page-phone.png")):
        png = shoot(browser, exp.url + "/", width, artefacts / name)
        dom = dom_figures(browser)
        expected = metrics_figures(exp)
        assert {k: dom[k] for k in expected} == expected
        # The static scenario's figures (tests/fixtures.py: 16 of 20 counted) and two more.
        assert (dom["used"], dom["limit"], dom["total"]) == (18, 20, 21)
        assert dom["room"] == "2 more jobs can start."
        assert dom["byModel"]["qwen3-8b"] == {
            "QUEUING": 2,
            "RUNNING": 2,
            "CANCELING": 1,
            "SUCCEEDED": 2,
            "FAILED": 1,
            "SUSPENDED": 1,
        }
        assert (
            browser.evaluate(
                "getComputedStyle(document.querySelector('.bar span')).backgroundColor"
            )
            == "rgb(154, 103, 0)"
        )  # 18 of 20: past the 80 % of DashScopeFineTuneQuotaNearlyFull
        assert dom["training"][:2] == [
            ["summariser-zh", "25%", "1.12"],
            ["support-bot-v3", "60%", "0.42 / 0.51"],
        ]
        # Nothing wider than the screen: no table or block overflows its box.
        overflowing = browser.evaluate(
            "[...document.querySelectorAll('body, section, .scroll, table')]"
            ".filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.className || e.tagName)"
        )
        assert overflowing == [], (width, overflowing)
        assert browser.evaluate("document.documentElement.scrollWidth") <= width
        shots[width] = png
    if os.environ.get(UPDATE_ENV) == "1":
        # For the README: the whole page on a desktop, the first screen on a phone (the
        # whole of it would double the repository's share of pictures).
        (ROOT / "docs" / "status-page-desktop.png").write_bytes(shots[DESKTOP])
        browser.set_width(PHONE, PHONE_SCREEN, mobile=True)
        browser.navigate(exp.url + "/")
        browser.screenshot(ROOT / "docs" / "status-page-phone.png", full_page=False)
    # The check can fail: a blank page has one colour.
    browser.set_width(DESKTOP, 900)
    browser.navigate("about:blank")
    blank = pixel_variety(browser, browser.screenshot(artefacts / "blank.png", full_page=False))
    assert (blank["colours"], blank["unlike"]) == (1, 0)
    for width, png in shots.items():
        variety = pixel_variety(browser, png)
        assert variety["width"] == width
        assert variety["height"] > 900
        assert variety["colours"] > 50, variety
        assert variety["unlike"] > 0.05, variety


def test_dark_and_light_colour_schemes(
    browser: Chromium, simulator: Simulator, exporter_factory: Callable[..., Exporter]
) -> None:
    exp = start_exporter(exporter_factory, simulator)
    background = "getComputedStyle(document.body).backgroundColor"
    for scheme, colour in (("dark", "rgb(13, 17, 23)"), ("light", "rgb(255, 255, 255)")):
        browser.page(
            "Emulation.setEmulatedMedia",
            features=[{"name": "prefers-color-scheme", "value": scheme}],
        )
        browser.navigate(exp.url + "/")
        assert browser.evaluate(background) == colour


def test_hostile_job_names_are_text_and_nothing_runs(
    browser: Chromium, simulator: Simulator, exporter_factory: Callable[..., Exporter]
) -> None:
    # The positive control: the hook does see a page that calls alert().
    browser.page("Page.navigate", url=f"data:text/html,{SCRIPT}")
    dialog = browser.wait_event("Page.javascriptDialogOpening")
    assert dialog["params"]["message"] == "1"
    browser.page("Page.handleJavaScriptDialog", accept=True)

    hostile = [
        {"job_id": "ft-xss-1", "job_name": SCRIPT, "status": "RUNNING", "model": "qwen3-8b"},
        {"job_id": "ft-xss-2", "job_name": IMG, "status": "QUEUING", "model": IMG},
        {
            "job_id": "ft-xss-3",
            "job_name": SCRIPT + IMG,
            "status": "FAILED",
            "model": SCRIPT,
            "end_time": "2030-01-01 00:00:00",
        },
    ]
    http_json(simulator.url + "/_sim/jobs", "POST", {"jobs": hostile})
    exp = start_exporter(exporter_factory, simulator)
    browser.drain()
    browser.page("Page.navigate", url=exp.url + "/")
    # An open dialog holds the load event back: wait for it, or for the dialog.
    opened = browser.wait_event(
        "Page.loadEventFired", timeout=20, also="Page.javascriptDialogOpening"
    )
    assert opened["method"] == "Page.loadEventFired", opened
    # A script or image handler would have run by the load event; give timers a moment.
    time.sleep(0.5)
    dialogs = [e for e in browser.drain() if e["method"] == "Page.javascriptDialogOpening"]
    assert dialogs == []
    assert browser.evaluate("document.scripts.length + document.images.length") == 0
    dom = dom_figures(browser)
    assert {SCRIPT, IMG, SCRIPT + IMG} <= set(dom["names"])
    assert dom["byModel"][IMG] == {"QUEUING": 1}
    assert dom["byModel"][SCRIPT] == {"FAILED": 1}
    assert dom == {**dom, **metrics_figures(exp)}


def test_the_page_needs_the_password_when_basic_auth_is_on(
    browser: Chromium,
    simulator: Simulator,
    exporter_factory: Callable[..., Exporter],
    pki: Pki,
    tmp_path: Path,
) -> None:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(tls_yaml(pki) + f"basic_auth_users:\n  {USER}: '{hashed}'\n")
    context = ssl.create_default_context(cafile=str(pki.ca))
    exp = start_exporter(
        exporter_factory,
        simulator,
        f"--web.config.file={web}",
        ssl_context=context,
        auth=(USER, PASSWORD),
    )
    assert exp.url.startswith("https://")
    # The test CA is not the browser's: trust this one server for the test.
    browser.page("Security.setIgnoreCertificateErrors", ignore=True)

    def load(headers: dict[str, str]) -> tuple[int, str]:
        """The page's HTTP status as the browser got it, and the browser's error."""
        error = browser.navigate(exp.url + "/", headers)
        statuses = [
            int(e["params"]["response"]["status"])
            for e in browser.drain()
            if e["method"] == "Network.responseReceived"
            and e["params"]["type"] == "Document"
            and e["params"]["response"]["url"] == exp.url + "/"
        ]
        assert len(statuses) == 1, statuses
        return statuses[0], error

    # Without the password (or with a wrong one) the browser gets 401 and, unable to ask
    # anyone, shows its own error page: nothing of the status page.
    refused = (401, "net::ERR_INVALID_AUTH_CREDENTIALS")
    assert load({}) == refused
    assert browser.evaluate("document.querySelector('.quota-used')") is None
    wrong = {"Authorization": basic_credentials(USER, "not-the-password")}
    assert load(wrong) == refused
    assert browser.evaluate("document.querySelector('.quota-used')") is None
    right = {"Authorization": basic_credentials(USER, PASSWORD)}
    assert load(right) == (200, "")
    assert dom_figures(browser)["used"] == 16
    # And without the browser: the same answers.
    assert http_get(exp.url + "/", context=context)[0] == 401
    assert exp.get("/")[0] == 200
