"""custody.backup.archive."""
