"""custody.store.sqlite."""
