"""The README's screenshot of the dashboard: docs/dashboard.png (1100×900, a prediction shown).

Starts `python -m serve` on a free loopback port — on the repository's model when
models/model.onnx, models/model.json and dvc.lock exist, else on the tiny test model
(tests/serve_fixtures.py) — with a temp SQLite log and a throwaway API key, makes a prediction
through the form in headless Debian Chromium (Playwright), enters the key, and saves the
viewport as a 256-colour PNG (Pillow), which keeps it well under 200 KB.

    python scripts/screenshot.py [--out docs/dashboard.png] [--width 1100] [--height 900]
"""

from __future__ import annotations

import argparse
import io
import secrets
import sys
import tempfile
from pathlib import Path

from live_service import ROOT, ServiceError, running_service

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]


def model_repo(tmp: Path) -> Path:
    if all((ROOT / p).exists() for p in ("models/model.onnx", "models/model.json", "dvc.lock")):
        return ROOT
    sys.path.insert(0, str(ROOT))
    from tests.serve_fixtures import build_tiny_model

    print("no model in the repository: using the tiny test model", file=sys.stderr)
    return build_tiny_model(tmp / "tiny").root


def shoot(base: str, key: str, out: Path, width: int, height: int) -> None:
    from PIL import Image
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(10_000)
            page.goto(f"{base}/dashboard")
            expect(page.locator("#predict-button")).to_be_enabled()
            page.locator("#predict-button").click()  # the form starts with mid-range values
            expect(page.locator("#result")).to_be_visible()
            page.locator("#api-key").fill(key)
            page.get_by_role("button", name="Show").click()
            expect(page.locator("#log-table tbody tr")).not_to_have_count(0)
            page.evaluate("document.activeElement.blur()")
            shot = page.screenshot()
        finally:
            browser.close()
    image = Image.open(io.BytesIO(shot)).convert("RGB")
    image = image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, optimize=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    parser.add_argument("--width", type=int, default=1100)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        repo, key = model_repo(tmp), secrets.token_hex(8)
        try:
            with running_service(repo, tmp, MEDCAST_API_KEY=key,
                                 MEDCAST_FIGURES_DIR=str(ROOT / "reports" / "figures")) as base:
                shoot(base, key, args.out, args.width, args.height)
        except ServiceError as exc:
            print(exc, file=sys.stderr)
            return 1
    print(f"{args.out}: {args.width}×{args.height}, {args.out.stat().st_size / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
