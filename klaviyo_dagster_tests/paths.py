"""Where the tests find what lies beside the project (``../shared``)."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED = PROJECT_ROOT.parent / "shared"
OPENAPI_SPEC = SHARED / "klaviyo-openapi" / "stable-2026-07-15.json"
