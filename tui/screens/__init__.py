"""The app's screens. Each one talks only to :mod:`tui.services.home`, from thread workers."""
