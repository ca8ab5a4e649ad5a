"""Proxy users: who may connect to the workers, with SCRAM-SHA-256 verifiers."""
