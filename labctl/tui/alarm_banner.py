"""The red banner across the top while any alarm is unacknowledged."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class AlarmBanner(Static):
    """One line per unacknowledged alarm ("s1: short detected …"); hidden when there is none.

    The app rings the bell when a new alarm appears; the banner stays until each alarm is acknowledged.
    """

    DEFAULT_CSS = """
    AlarmBanner {
        display: none;
        background: $error;
        color: $text;
        text-style: bold;
        padding: 0 1;
        height: auto;
        max-height: 5;
    }
    AlarmBanner.-active { display: block; }
    """

    def show_alarms(self, alarms: list[tuple[str, str]]) -> None:
        """Show `alarms` (source, message): a station name or "broker"; an empty list hides the banner."""
        self.set_class(bool(alarms), "-active")
        if not alarms:
            self.update("")
            return
        lines = [f"⚠ ALARM {source}: {message}" for source, message in alarms[:4]]
        if len(alarms) > 4:
            lines.append(f"… and {len(alarms) - 4} more")
        lines[0] += "   (k: acknowledge)"
        self.update(Text("\n".join(lines)))  # alarm texts are not markup
