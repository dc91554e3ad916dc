"""taskinfa-worker: one asyncio process that runs N agent slots against a Taskinfa board."""

__version__ = "0.1.0"

__all__ = ["__version__"]
