"""The linkage side's HTTP routes: a router per resource, mounted by :func:`server.app.create_app`."""
