"""The processes of Agent OS: `serve` (API, controller, relay in one process, or a subset),
`relay`, and `operator`. Each builds its `Container` (controlplane/bootstrap.py) from the
settings, runs until SIGTERM or SIGINT, and drains. The CLI's commands only call these."""
