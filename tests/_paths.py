"""Where the tests find the real datasets: ``$CITYTWIN_SHARED_DATA``, else ``../shared/data`` beside the project."""

from __future__ import annotations

import os
from pathlib import Path

SHARED_DATA = Path(os.environ.get("CITYTWIN_SHARED_DATA")
                   or Path(__file__).resolve().parents[2] / "shared" / "data")
