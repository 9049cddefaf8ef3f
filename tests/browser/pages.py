"""What the browser tests share: where screenshots go, the test password, and signing in."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

#: ``REFRAIN_SCREENSHOTS_DIR`` (docs/screenshots when regenerating them), else a temp folder.
SHOTS = Path(
    os.environ.get("REFRAIN_SCREENSHOTS_DIR") or Path(tempfile.gettempdir()) / "refrain-screenshots"
)
PASSWORD = "refrain-pass-123"


def login(page: Any, base: str, username: str, password: str = PASSWORD) -> None:
    """Sign in through the login form and wait for the home page."""
    page.goto(f"{base}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")
