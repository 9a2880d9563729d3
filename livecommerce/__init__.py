"""livecommerce: live-shopping drops and timed offers, sold to thousands of viewers at once."""

from __future__ import annotations

__version__ = "0.1.0"
