"""The spec's example application, with only the renames of docs/migrating-from-the-spec.md."""
