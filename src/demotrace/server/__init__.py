"""The collector service (issue 5; DESIGN.md §3, §8): FastAPI app, metadata database, blob
store, envelope encryption, access log.

Importing this package is cheap; heavy modules (FastAPI, SQLAlchemy) load in the submodules:
:mod:`.app` (``create_app``), :mod:`.service` (``Collector``), :mod:`.wire` (upload format,
shared with the client :mod:`demotrace.upload`).
"""
