"""The device's over-the-air updater: TUF channel client, persisted state, staged activation,
hot swap through the runtime's load path, and automatic rollback (docs/ota.md)."""
