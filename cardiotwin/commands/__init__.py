"""One module per CLI command: ``NAME``, ``HELP``, ``add_arguments(parser)``, ``run(args) -> int``.

Each is a thin adapter over the stage functions; ``cardiotwin.cli`` lists them in ``COMMANDS``.
"""
