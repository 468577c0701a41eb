"""The statistics side's HTTP routes; ``server.app.create_app`` mounts them in the same process."""
