"""The composition root: Ray Serve deployments, the actors' wiring, `forge up`.

Importing it keeps pandas and pyarrow out of Ray Serve and Ray's serialization setup in
this process (serve/lean_workers.py), before any of its modules imports Ray."""

from serve.lean_workers import install

install()
