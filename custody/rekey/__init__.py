"""custody.rekey.jobs."""
