"""Alembic migrations of asyncsched's tables, shipped inside the package (see :mod:`asyncsched.store`)."""
