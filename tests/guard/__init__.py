"""The guard's evasion corpus: attacks that must be refused and benign statements that must
pass unchanged, each run against real PostgreSQL directly and through a real worker."""
