"""tui.services.home."""
