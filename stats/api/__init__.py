"""The statistics side's HTTP routes; ``linkage.api.app.create_app`` mounts them in the same process."""
