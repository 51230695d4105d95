"""The package version: equal to the C header's PEFTKIT_VERSION_STRING (a test checks both)."""

__version__ = "0.2.0"
