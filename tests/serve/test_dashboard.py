"""The dashboard (serve/dashboard.py, serve/static/): the page, its assets and the figures over
HTTP with Litestar's TestClient, and one end-to-end test in a real browser: the real service
(`python -m serve` on a free loopback port, the tiny model of devtools/tiny_model.py, a temp
SQLite log) driven by headless Debian Chromium through Playwright — card, form, prediction,
client- and server-side validation messages, and the prediction log behind the API key.
Every wait is bounded; the server and the browser are always stopped.
"""

from __future__ import annotations

import http.client
import json
import math
import re
import struct
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest

from devtools.service import running, service_env
from devtools.tiny_model import TinyModel
from serve.served import ModelSource
from serve.settings import Settings
from tests.support.browser import chromium_page, require_browser
from tests.support.registry import CHAMPION, NAME, Store
from tests.support.serving import serving

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
KEY = "dashboard-key-7"
SCREENSHOT = ROOT / "test-artifacts" / "dashboard.png"


def png(width: int = 8, height: int = 6) -> bytes:
    """A valid RGB PNG, drawn without any imaging library."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes(c for x in range(width) for c in (40 * x % 256, 90, 160))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(row * height))
            + chunk(b"IEND", b""))


@pytest.fixture
def figures(tmp_path: Path) -> Path:
    """One figure, plus files that must never be served: not PNG, hidden, a symlink out."""
    folder = tmp_path / "figures"
    folder.mkdir()
    (folder / "fig_a.png").write_bytes(png())
    (folder / "notes.txt").write_text("not a figure")
    (folder / ".hidden.png").write_bytes(png())
    (tmp_path / "secret.png").write_bytes(png())
    (folder / "escape.png").symlink_to(tmp_path / "secret.png")
    return folder


def settings_for(repo: Path, figures: Path | str, **overrides: Any) -> Settings:
    """No model in these repos: the service stays unready, and the dashboard must still be
    served."""
    base: dict[str, Any] = dict(repo=repo, database_url=f"sqlite:///{repo / 'serve.db'}",
                                api_key=KEY, rate_limit=None, figures_dir=str(figures),
                                log_flush_ms=5, log_drain_s=5)
    base.update(overrides)
    return Settings(**base)


# ---- the page and its assets over HTTP ------------------------------------------------------


def test_root_redirects_to_the_dashboard_page(tmp_path: Path, figures: Path) -> None:
    with serving(settings_for(tmp_path, figures)) as client:
        r = client.get("/", follow_redirects=False)
        assert r.status_code in (302, 307) and r.headers["location"] == "/dashboard"
        page = client.get("/")
        assert page.status_code == 200 and page.url.path == "/dashboard"
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        html = page.text
        assert '<script type="module" src="/dashboard/static/app.js"></script>' in html
        assert 'href="/dashboard/static/style.css"' in html
        assert client.get("/health/ready").status_code == 503  # no model: unready, page served


def test_page_has_a_strict_content_security_policy(tmp_path: Path, figures: Path) -> None:
    with serving(settings_for(tmp_path, figures)) as client:
        r = client.get("/dashboard")
    csp = r.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'self'"
    assert "unsafe" not in csp and "script-src" not in directives  # scripts: 'self' only
    assert r.headers["x-content-type-options"] == "nosniff"
    # nothing inline for the policy to block: no script body, no <style>, no style attributes,
    # no event-handler attributes, and nothing loaded from another origin
    html = r.text
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert "<style" not in html and " style=" not in html
    assert not re.search(r"\son[a-z]+=", html)
    assert not re.search(r"""(src|href)=["'](https?:)?//""", html)


@pytest.mark.parametrize(("name", "content_type"), [
    ("app.js", "text/javascript; charset=utf-8"),
    ("style.css", "text/css; charset=utf-8"),
    ("icon.svg", "image/svg+xml"),
])
def test_static_assets_are_served_with_their_content_types(
    tmp_path: Path, figures: Path, name: str, content_type: str
) -> None:
    with serving(settings_for(tmp_path, figures)) as client:
        r = client.get(f"/dashboard/static/{name}")
        assert r.status_code == 200 and r.headers["content-type"] == content_type
        assert r.content == (ROOT / "serve" / "static" / name).read_bytes()
        assert r.headers["x-content-type-options"] == "nosniff"
        for other in ("index.html", "missing.js", "..%2Fdashboard.py", "%2e%2e%2fapp.py"):
            assert client.get(f"/dashboard/static/{other}").status_code == 404


def test_figures_are_listed_and_served(tmp_path: Path, figures: Path) -> None:
    with serving(settings_for(tmp_path, figures)) as client:
        listing = client.get("/dashboard/figures")
        assert listing.status_code == 200
        assert listing.json() == {"figures": [{"name": "fig_a.png",
                                               "url": "/dashboard/figures/fig_a.png"}]}
        r = client.get("/dashboard/figures/fig_a.png")
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert r.content == (figures / "fig_a.png").read_bytes()
        assert r.headers["content-disposition"].startswith("inline")
        # figures drawn after the start show up: the folder is read per request
        (figures / "fig_b.png").write_bytes(png())
        names = [f["name"] for f in client.get("/dashboard/figures").json()["figures"]]
        assert names == ["fig_a.png", "fig_b.png"]


@pytest.mark.parametrize("path", [
    "../../dvc.lock",  # normalised by the client to /dvc.lock
    "..%2F..%2Fdvc.lock",
    "%2e%2e%2f%2e%2e%2fdvc.lock",
    "%2e%2e/%2e%2e/dvc.lock",
    "..%5c..%5cdvc.lock",
    ".hidden.png",
    "escape.png",  # a symlink out of the folder
    "notes.txt",
    "missing.png",
])
def test_figure_paths_cannot_leave_the_folder(tmp_path: Path, figures: Path, path: str) -> None:
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    with serving(settings_for(tmp_path, figures)) as client:
        r = client.get(f"/dashboard/figures/{path}")
    assert r.status_code == 404, (path, r.status_code, r.text)


def test_missing_figures_folder_lists_nothing(tmp_path: Path) -> None:
    with serving(settings_for(tmp_path, "reports/figures")) as client:
        assert client.get("/dashboard/figures").json() == {"figures": []}
        assert client.get("/dashboard/figures/cv_scores.png").status_code == 404


def test_dashboard_stays_out_of_the_openapi_schema(tmp_path: Path, figures: Path) -> None:
    with serving(settings_for(tmp_path, figures)) as client:
        spec = client.get("/schema/openapi.json")
    assert spec.status_code == 200
    assert not [p for p in spec.json()["paths"] if p == "/" or p.startswith("/dashboard")]


def test_figures_dir_setting_defaults_to_reports_figures(tmp_path: Path) -> None:
    d = Settings.from_env({"MEDCAST_REPO": str(tmp_path)})
    assert d.figures_dir == "reports/figures"
    assert d.figures_path == tmp_path.resolve() / "reports" / "figures"
    s = Settings.from_env({"MEDCAST_REPO": str(tmp_path), "MEDCAST_FIGURES_DIR": "/srv/figs"})
    assert s.figures_path == Path("/srv/figs")


# ---- the real service in a real browser ------------------------------------------------------


@contextmanager
def real_service(repo: Path, figures: Path, tmp_path: Path, pycache: Path) -> Iterator[str]:
    """`python -m serve` on a free loopback port; yields its base URL; always stopped (a
    graceful stop must exit 0 without a traceback)."""
    env = service_env(
        pycache, MEDCAST_REPO=str(repo), MEDCAST_DATABASE_URL=f"sqlite:///{tmp_path / 'log.db'}",
        MEDCAST_API_KEY=KEY, MEDCAST_FIGURES_DIR=str(figures), MEDCAST_HOST="127.0.0.1",
        MEDCAST_LOG_FLUSH_MS="5", MEDCAST_LOG_LEVEL="WARNING",
    )
    with running(env, cwd=tmp_path, log=tmp_path / "serve.log") as service:
        yield service.url
        code = service.stop()
        assert code == 0 and "Traceback" not in service.output(), service.output(3000)


def wait_for_log_row(base: str, request_id: str, timeout: float = 10.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page = httpx.get(f"{base}/predictions?limit=1000", headers={"X-API-Key": KEY}, timeout=2)
        if any(r["request_id"] == request_id for r in page.json()["items"]):
            return
        time.sleep(0.02)
    raise AssertionError(f"request {request_id} not in the prediction log after {timeout} s")


def raw_get(base: str, path: str) -> int:
    """GET with the path sent as is (http.client normalises nothing)."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def test_dashboard_in_a_browser(
    tiny: TinyModel, figures: Path, tmp_path: Path, pycache: Path
) -> None:
    sync_api = require_browser()
    expect = sync_api.expect
    expect.set_options(timeout=10_000)
    patient = tiny.examples[0]
    with real_service(tiny.root, figures, tmp_path, pycache) as base, \
            chromium_page(sync_api, viewport={"width": 1100, "height": 900}) as page:
        for path in ("/dashboard/figures/../../dvc.lock", "/dashboard/figures/..%2f..%2fdvc.lock",
                     "/dashboard/static/../app.py"):
            assert raw_get(base, path) == 404, path

        problems: list[str] = []  # CSP violations and uncaught script errors
        page.on("console", lambda m: problems.append(m.text)
                if m.type == "error" and "Content Security Policy" in m.text else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        requests: list[Any] = []
        page.on("request", lambda r: requests.append(r))

        # the card
        page.goto(f"{base}/", timeout=15_000)
        assert page.url == f"{base}/dashboard"
        expect(page.locator("#model-name")).to_have_text(tiny.card["name"], timeout=10_000)
        expect(page.locator("#card-facts")).to_contain_text("charges (USD per year)")
        expect(page.locator("#card-facts")).to_contain_text("insurance")
        expect(page.locator("#card-facts")).to_contain_text("ridge")
        expect(page.locator("#metrics")).to_contain_text("R²")
        expect(page.locator("#features tbody tr")).to_have_count(len(tiny.card["features"]))
        expect(page.locator("#features")).to_contain_text("kg/m2")
        expect(page.locator("#features")).to_contain_text("northeast, northwest, southeast")
        expect(page.locator("#status")).to_have_text("ready")
        expect(page.locator("#signal-banner")).to_be_hidden()  # the tiny model has signal
        figure = page.locator('#figure-list img[alt="fig a"]')
        expect(figure).to_be_visible()
        page.wait_for_function("img => img.complete && img.naturalWidth === 8",
                               arg=figure.element_handle(), timeout=10_000)

        # the form follows the card: numbers with bounds and step, selects for categories,
        # a <label for> for every control
        button = page.locator("#predict-button")
        expect(button).to_be_enabled()
        field = {f["name"]: page.locator(f'[data-feature="{f["name"]}"]')
                 for f in tiny.card["features"]}
        age, bmi = field["age"], field["bmi"]
        assert (age.get_attribute("type"), age.get_attribute("min"), age.get_attribute("max"),
                age.get_attribute("step")) == ("number", "0", "120", "1")
        assert (bmi.get_attribute("min"), bmi.get_attribute("max"),
                bmi.get_attribute("step")) == ("10", "80", "any")
        assert field["region"].evaluate("e => e.tagName") == "SELECT"
        for f in tiny.card["features"]:
            control = field[f["name"]]
            assert control.get_attribute("required") is not None
            label = page.locator(f'label[for="{control.get_attribute("id")}"]')
            expect(label).to_contain_text(f["name"])
        expect(page.get_by_label(re.compile(r"^bmi\b"))).to_have_attribute("max", "80")

        # a valid patient → a prediction with the model version and the request id
        for f in tiny.card["features"]:
            name, value = f["name"], patient[f["name"]]
            if f["type"] == "category":
                field[name].select_option(value)
            else:
                field[name].fill(str(value))
        button.click()
        expect(page.locator("#result")).to_be_visible()
        expect(page.locator("#result-version")).to_have_text(tiny.md5)
        request_id = page.locator("#result-request").inner_text()
        assert re.fullmatch(r"[0-9a-f]{32}", request_id)
        shown = float(page.locator("#result-value").inner_text().replace(",", ""))
        assert math.isclose(shown, tiny.expected[0], rel_tol=1e-4, abs_tol=0.01)
        # … and its 90 % range, with a sentence on what 90 % means
        expect(page.locator("#result-interval")).to_be_visible()
        expect(page.locator("#interval-level")).to_have_text("90%")
        for bound, expected in (("lower", tiny.expected_lower[0]),
                                ("upper", tiny.expected_upper[0])):
            text = page.locator(f"#interval-{bound}").inner_text().replace(",", "")
            assert math.isclose(float(text), expected, rel_tol=1e-4, abs_tol=0.01), bound
        expect(page.locator("#interval-meaning")).to_contain_text("9 in 10 patients")

        # client side: above max → the browser's own message next to the field, no request
        posts = sum(r.method == "POST" for r in requests)
        bmi_error = page.locator('[data-error-for="bmi"]')
        bmi.fill("95")
        button.click()
        expect(bmi_error).to_be_visible()
        expect(bmi_error).to_have_attribute("data-source", "client")
        browser_message = bmi.evaluate("e => e.validationMessage")
        assert browser_message and "80" in browser_message
        expect(bmi_error).to_have_text(browser_message)
        expect(bmi).to_have_attribute("aria-invalid", "true")
        expect(page.locator('[data-error-for="age"]')).to_be_hidden()
        assert sum(r.method == "POST" for r in requests) == posts

        # server side: without the max attribute the client lets 95 through; the service's
        # 422 names the field and its message is shown next to it
        bmi.evaluate("e => e.removeAttribute('max')")
        button.click()
        expect(bmi_error).to_have_attribute("data-source", "server")
        expect(bmi_error).to_contain_text("<= 80")
        expect(bmi_error).to_contain_text("bmi")
        expect(page.locator("#result")).to_be_hidden()
        assert sum(r.method == "POST" for r in requests) == posts + 1
        bmi.fill(str(patient["bmi"]))  # editing clears the server's verdict
        expect(bmi_error).to_be_hidden()
        expect(bmi).not_to_have_attribute("aria-invalid", "true")
        button.click()
        expect(page.locator("#result")).to_be_visible()
        expect(page.locator("#result-request")).not_to_have_text(request_id)

        # the log: a wrong key is refused; the right one shows the predictions just made
        wait_for_log_row(base, page.locator("#result-request").inner_text())
        page.locator("#api-key").fill("wrong-key")
        page.get_by_role("button", name="Show").click()
        expect(page.locator("#log-error")).to_contain_text("401")
        page.locator("#api-key").fill(KEY)
        page.get_by_role("button", name="Show").click()
        row = page.locator(f'#log-table tr[data-request-id="{request_id}"]')
        expect(row).to_be_visible()
        expect(row).to_contain_text(tiny.md5[:8])
        expect(page.locator("#log-error")).to_be_hidden()
        expect(page.locator("#hourly svg rect.bar")).to_have_count(24)
        counts = page.locator("#hourly svg text.count").all_text_contents()
        assert sum(map(int, counts)) == 2, counts  # one hour, or two if it just turned
        assert page.evaluate("sessionStorage.getItem('medcast.apiKey')") == KEY
        log_requests = [r for r in requests if "/predictions" in r.url]
        assert log_requests and all(KEY not in r.url and "wrong-key" not in r.url
                                    for r in requests)
        assert log_requests[-1].headers.get("x-api-key") == KEY

        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)

        # the key lives as long as the tab: a reload shows the log again
        page.reload()
        expect(row).to_be_visible()
        assert not problems, problems


def fill_patient(page: Any, card: dict[str, Any], patient: dict[str, Any]) -> None:
    for f in card["features"]:
        control = page.locator(f'[data-feature="{f["name"]}"]')
        value = patient.get(f["name"])
        if f["type"] == "category":
            control.select_option("" if value is None else value)
        else:
            control.fill("" if value is None else str(value))


def signed(value: float) -> str:
    """A contribution as the dashboard writes it (en-US: sign, thousands, two decimals)."""
    text = f"{value:+,.2f}"
    return text.lstrip("+-") if text.lstrip("+-") == "0.00" else text


def test_dashboard_explains_a_prediction_with_a_waterfall(
    tiny: TinyModel, figures: Path, tmp_path: Path, pycache: Path
) -> None:
    """The card has an explainer: the form asks /predict?explain=true, and the waterfall draws
    one bar per feature (largest |contribution| first) from the base value to the prediction,
    each bar's text its signed contribution as the API answered it. Then, with the answers
    replaced by the test: 12 features (the smallest four share one bar), a missing one, a
    sampling margin; and a card without an explainer (no chart, no error)."""
    sync_api = require_browser()
    expect = sync_api.expect
    expect.set_options(timeout=10_000)
    patient = tiny.examples[1]
    with real_service(tiny.root, figures, tmp_path, pycache) as base, \
            chromium_page(sync_api, viewport={"width": 1100, "height": 900},
                          locale="en-US") as page:
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.goto(f"{base}/dashboard", timeout=15_000)
        expect(page.locator("#status")).to_have_text("ready")
        fill_patient(page, tiny.card, patient)
        with page.expect_response(lambda r: "/predict" in r.url) as answered:
            page.locator("#predict-button").click()
        response = answered.value
        assert response.url.endswith("/predict?explain=true"), response.url
        out = response.json()
        e = out["explanation"]
        chart = page.locator("#waterfall svg")
        expect(chart).to_be_visible()
        label = chart.get_attribute("aria-label")
        assert label and f"{out['prediction']:,.2f}" in label and f"{e['base_value']:,.2f}" in label

        # one bar per feature, largest |contribution| first, each with its signed value and a
        # <title>; the base value labelled, the prediction last
        order = sorted(e["contributions"], key=lambda n: -abs(e["contributions"][n]))
        bars = chart.locator("g.step[data-step]")
        keys = [bars.nth(i).get_attribute("data-step") for i in range(bars.count())]
        assert keys == ["(base)", *order, "(prediction)"]
        top = order[0]
        bar = chart.locator(f'g.step[data-step="{top}"]')
        assert bar.locator(".contribution").text_content() == signed(e["contributions"][top])
        assert bar.get_attribute("class") == (
            "step up" if e["contributions"][top] >= 0 else "step down")
        assert signed(e["contributions"][top]) in bar.locator("title").text_content()
        for name in order:
            shown = chart.locator(f'g.step[data-step="{name}"] .contribution').text_content()
            assert shown == signed(e["contributions"][name]), name
        base_text = chart.locator('g.step[data-step="(base)"] .total').text_content()
        assert base_text == f"{e['base_value']:,.2f}"
        assert chart.locator('g.step[data-step="(prediction)"] .total').text_content() == (
            f"{out['prediction']:,.2f}")
        reading = page.locator("#explanation-reading")
        expect(reading).to_contain_text(f"({e['base_value']:,.2f}) to {out['prediction']:,.2f} "
                                        f"{tiny.card['target_unit']}")
        expect(reading).to_contain_text("red raises it, blue lowers it")
        expect(page.locator("#explanation-sampling")).to_be_hidden()
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.locator("#result").screenshot(path=str(SCREENSHOT.with_name("waterfall.png")))

        # 12 features, sampled: the 8 largest alone, the 4 smallest as "4 other features";
        # a missing feature says so; every value carries its margin
        names = [f"x{i}" for i in range(12)]
        contributions = {n: (-1) ** i * (12 - i) * 1.5 for i, n in enumerate(names)}
        fake = {**out, "explanation": {
            "base_value": 100.0, "contributions": contributions, "method": "sampling",
            "missing": ["x1"], "background_rows": 50,
            "margin": {n: 0.25 for n in names}}}
        fake["prediction"] = 100.0 + sum(contributions.values())
        page.route("**/predict?explain=true", lambda route: route.fulfill(json=fake))
        page.locator("#predict-button").click()
        expect(chart.locator('g.step[data-step="(other)"]')).to_be_visible()
        keys = [bars.nth(i).get_attribute("data-step") for i in range(bars.count())]
        assert keys == ["(base)", *names[:8], "(other)", "(prediction)"]
        other = chart.locator('g.step[data-step="(other)"]')
        expect(other.locator(".name")).to_have_text("4 other features")
        expect(other.locator(".contribution")).to_have_text(
            signed(sum(contributions[n] for n in names[8:])))
        expect(chart.locator('g.step[data-step="x1"] .name')).to_have_text("x1 (missing)")
        expect(chart.locator('g.step[data-step="x0"] .contribution')).to_have_text(
            "+18.00 ± 0.25")
        expect(chart.locator('g.step[data-step="x1"]')).to_have_class("step down")
        expect(page.locator("#explanation-sampling")).to_contain_text("95% confidence")
        expect(page.locator("#explanation-reading")).to_contain_text("50 training patients")

        # a card exported before explanations: a plain /predict, no chart, no error
        card = json.loads(page.evaluate("fetch('/model').then(r => r.text())"))
        del card["explainer"]
        page.route("**/model", answer(card))
        page.reload()
        expect(page.locator("#status")).to_have_text("ready")
        fill_patient(page, tiny.card, patient)
        with page.expect_response(lambda r: "/predict" in r.url) as answered:
            page.locator("#predict-button").click()
        assert answered.value.url.endswith("/predict"), answered.value.url
        expect(page.locator("#result")).to_be_visible()
        expect(page.locator("#explanation")).to_be_hidden()
        assert "explanation" not in answered.value.json()
        assert not problems, problems


def test_dashboard_lets_nullable_fields_be_left_blank(figures: Path, tmp_path: Path,
                                                       pycache: Path) -> None:
    """A model that imputes missing values (medcast's own pipeline on a messy table): its
    nullable fields are optional in the form, a blank one is sent as null, and the service
    answers; a required field left blank is still stopped by the browser. An integer-coded
    category (`trt`: "1", "2") is a select that sends the level's text."""
    import json

    from devtools.tiny_model import build_nullable_model

    sync_api = require_browser()
    expect = sync_api.expect
    model = build_nullable_model(tmp_path / "model", coded=True)
    nullable = [f["name"] for f in model.card["features"] if f["nullable"]]
    assert nullable == ["BL.Cig.Day", "sbp", "Hypertension", "trt"]
    with real_service(model.root, figures, tmp_path, pycache) as base, \
            chromium_page(sync_api) as page:
        bodies: list[Any] = []
        page.on("request", lambda r: bodies.append(r.post_data)
                if r.method == "POST" and r.url.split("?")[0].endswith("/predict") else None)
        page.goto(f"{base}/dashboard", timeout=15_000)
        expect(page.locator("#status")).to_have_text("ready", timeout=10_000)
        field = {f["name"]: page.locator(f'[data-feature="{f["name"]}"]')
                 for f in model.card["features"]}
        for f in model.card["features"]:
            required = field[f["name"]].get_attribute("required") is not None
            assert required == (not f["nullable"]), f["name"]
        assert "(unknown)" in field["Hypertension"].inner_text()
        expect(page.locator(f'#{field["sbp"].get_attribute("id")}-hint')).to_contain_text(
            "may be left blank")

        field["BL.Cig.Day"].fill("")
        field["sbp"].fill("")
        field["Hypertension"].select_option("")
        field["trt"].select_option("")
        page.locator("#predict-button").click()
        expect(page.locator("#result")).to_be_visible()
        sent = json.loads(bodies[-1])
        assert sent["BL.Cig.Day"] is None and sent["sbp"] is None
        assert sent["Hypertension"] is None and sent["age"] is not None
        assert sent["trt"] is None

        field["trt"].select_option("2")
        before = page.locator("#result-request").inner_text()
        page.locator("#predict-button").click()
        expect(page.locator("#result-request")).not_to_have_text(before)
        assert json.loads(bodies[-1])["trt"] == "2"  # the level's text, as the card has it

        field["age"].fill("")  # required: the browser refuses before any request
        before = len(bodies)
        page.locator("#predict-button").click()
        expect(page.locator('[data-error-for="age"]')).to_be_visible()
        assert len(bodies) == before


def test_dashboard_and_model_card_say_when_no_candidate_beats_the_mean(
        figures: Path, tmp_path: Path, pycache: Path) -> None:
    """A study whose best candidate does no better than the training mean: GET /model carries
    the verdict, and the dashboard shows a banner above everything else."""
    import httpx

    from devtools.tiny_model import build_tiny_model

    sync_api = require_browser()
    expect = sync_api.expect
    model = build_tiny_model(tmp_path / "model", signal=False)
    with real_service(model.root, figures, tmp_path, pycache) as base, \
            chromium_page(sync_api) as page:
        served = httpx.get(f"{base}/model", timeout=5).json()
        assert served["signal"]["signal"] is False
        assert served["signal"]["message"].startswith("no candidate beats the mean")
        page.goto(f"{base}/dashboard", timeout=15_000)
        banner = page.locator("#signal-banner")
        expect(banner).to_be_visible(timeout=10_000)
        expect(banner).to_contain_text("No candidate beats the mean")
        expect(banner).to_contain_text("the best, ridge, does not predict charges")


# ---- the registry's version and alias ---------------------------------------------------------------------------


@pytest.fixture
def champion_service(store: Store, empty: Path, tmp_path: Path, pycache: Path) -> Iterator[str]:
    """`python -m serve` serving the champion from the store; yields its base URL."""
    env = service_env(pycache, MEDCAST_REPO=str(empty), MEDCAST_MODEL_URI=CHAMPION,
                      MLFLOW_TRACKING_URI=store.uri,
                      MEDCAST_DATABASE_URL=f"sqlite:///{tmp_path / 'log.db'}",
                      MEDCAST_FIGURES_DIR=str(tmp_path / "figures"), MEDCAST_LOG_LEVEL="WARNING")
    with running(env, cwd=tmp_path, log=tmp_path / "serve.log") as service:
        yield service.url
        assert service.stop() == 0 and "Traceback" not in service.output(), service.output(3000)


def answer(body: dict[str, Any]) -> Any:
    """A Playwright route handler answering `body` as JSON."""
    return lambda route: route.fulfill(json=body)


def test_dashboard_shows_the_registered_version_and_alias(champion_service: str) -> None:
    """The real service's card; then the same card as a workspace and a revision load would
    serve it (GET /model answered by the test): no version or alias is made up."""
    sync_api = require_browser()
    expect = sync_api.expect
    with chromium_page(sync_api) as page:
        page.goto(f"{champion_service}/dashboard", timeout=15_000)
        line = page.locator("#model-source")
        expect(line).to_have_text(f"{NAME} version 1 (@champion)", timeout=10_000)
        expect(page.locator("#card-facts dt").filter(has_text="loaded from")).to_have_count(1)
        served = json.loads(page.evaluate("fetch('/model').then(r => r.text())"))
        assert served["serving"]["source"]["alias"] == "champion"
        for source, text in (
                (ModelSource("workspace"), "workspace model (not loaded from the registry)"),
                (ModelSource("revision", revision="abc123"),
                 "revision abc123 (not loaded from the registry)"),
                (ModelSource("registry", uri=f"models:/{NAME}/1", name=NAME, version="1"),
                 f"{NAME} version 1 (by version number)")):
            body = {**served, "serving": {**served["serving"],
                                          "source": msgspec.to_builtins(source)}}
            page.unroute("**/model")
            page.route("**/model", answer(body))
            page.reload()
            expect(line).to_have_text(text)
