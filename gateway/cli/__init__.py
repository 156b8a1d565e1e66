"""The ``tiyi`` entry points, kept apart from the service: the parser and error boundary (``main``) and one
module per command family (demo and sim, verify, proof, chain, bench)."""

from gateway.cli.main import EXIT_FAIL, EXIT_OK, EXIT_USAGE, build_parser, main

__all__ = ["EXIT_FAIL", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]
