"""The process that serves both sides (the embedded default): ``server.app.create_app(config)``.

It composes the linkage side's routes and store with the statistics side's, keeping each
on its own store and credentials; it is the only package that imports both.
"""
