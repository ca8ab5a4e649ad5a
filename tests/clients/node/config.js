'use strict'
// Connection settings for the node-postgres scripts, read from the environment that
// tests/integration/test_node.py passes: PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE and,
// for TLS, PGSSLROOTCERT (the CA that must have signed the server certificate).
// Nothing else is read, so the machine's own PG* settings cannot change what is tested.

const fs = require('fs')

function required(name) {
  const value = process.env[name]
  if (value === undefined || value === '') {
    throw new Error(`environment variable ${name} is required`)
  }
  return value
}

function clientConfig(overrides = {}) {
  const ca = process.env.PGSSLROOTCERT
  return {
    host: required('PGHOST'),
    port: Number(required('PGPORT')),
    user: required('PGUSER'),
    password: process.env.PGPASSWORD || undefined,
    database: required('PGDATABASE'),
    // With a CA the server certificate is verified (chain and host name); without one the
    // connection is plain: the proxy offers TLS only when it is configured to.
    ssl: ca ? { ca: fs.readFileSync(ca, 'utf8'), rejectUnauthorized: true } : false,
    connectionTimeoutMillis: 10000,
    ...overrides,
  }
}

// What the client's socket is: plain TCP, or TLS and whether the certificate was verified.
function transportOf(client) {
  const stream = client.connection.stream
  if (!stream.encrypted) {
    return { tls: false }
  }
  return { tls: true, authorized: stream.authorized === true, protocol: stream.getProtocol() }
}

function errorInfo(err) {
  return { code: err.code || null, severity: err.severity || null, message: err.message }
}

module.exports = { clientConfig, transportOf, errorInfo }
