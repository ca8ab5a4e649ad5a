"""The contract between the control plane and the workers.

``schema`` defines the configuration snapshot (what a worker enforces), ``loader`` reads it from
TOML with errors that name file, line and key. The control plane imports only this package.
"""

from __future__ import annotations

from proxyworker.config.loader import ConfigError, load_file, loads
from proxyworker.config.schema import Database, Upstream, User, WorkerConfig

__all__ = ["ConfigError", "Database", "Upstream", "User", "WorkerConfig", "load_file", "loads"]
