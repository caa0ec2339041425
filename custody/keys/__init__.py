"""custody.keys."""
