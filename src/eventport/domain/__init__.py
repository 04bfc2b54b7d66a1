"""The domain core: rules and vocabulary with no HTTP or database in sight."""
