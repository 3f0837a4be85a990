"""What the two station consoles share: serving a Starlette app in
a daemon's event loop (:mod:`relay.web.server`), the login and the guard
against cross-site requests (:mod:`relay.web.auth`), and one JSON line for
every failure. The pages themselves are the edge's (``edge.web``) and the
ground's (``ground.web``). Needs the ``edge`` or ``ground`` extra (Starlette,
uvicorn)."""
