"""A victim application for the hostile tests: ``services`` is allow-listed, the rest is not."""
