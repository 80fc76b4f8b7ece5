"""reconciler: converge a fleet of Docker engines onto desired container rows kept in SQL."""

__version__ = "0.1.0"
