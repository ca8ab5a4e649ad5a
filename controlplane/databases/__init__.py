"""Databases: what clients put in dbname, and the upstream server behind each one."""
