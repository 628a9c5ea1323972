"""The ``eventbus`` command line."""
