"""The linkage service's HTTP layer: ``linkage.api.app.create_app(config)`` and a router per resource.

Nothing is re-exported here: ``stats.api`` imports ``linkage.api.deps``, and importing the
app from this package would make that circular.
"""
