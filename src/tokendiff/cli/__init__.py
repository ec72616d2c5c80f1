"""The ``tokendiff`` command line."""
