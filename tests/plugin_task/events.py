"""The level task's event bodies."""

from __future__ import annotations

from pydantic import Field

from agent.events import EventBody


class LoudSound(EventBody):
    """A window whose RMS level exceeds the configured threshold. The event's score is the level in dBFS."""

    type = "loud_sound"
    severity = "warning"
    level_dbfs: float = Field(description="RMS level of the window, dB relative to full scale")
    threshold_dbfs: float = Field(description="the configured threshold")


EVENTS = (LoudSound,)
