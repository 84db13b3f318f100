"""The on-device event store: tables declared in config (or by a bundle), one SQLite file each,
sensitive payloads sealed, retention, an in-memory ring of recent events (docs/data.md)."""
