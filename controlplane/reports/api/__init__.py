"""REST API of ``reports``."""
