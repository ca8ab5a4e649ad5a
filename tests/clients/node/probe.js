'use strict'
// Connect once with node-postgres and run SELECT 1; print ONE JSON object on stdout:
// {"ok": true, "transport": {...}} or {"ok": false, "error": {code, severity, message}}.
// Used by tests/integration/test_node.py for the TLS checks, including the ones that must
// fail (an untrusted CA, TLS asked of a worker that has none). Environment: see config.js.

const { Client } = require('pg')
const { clientConfig, transportOf, errorInfo } = require('./config')

async function main() {
  const client = new Client(clientConfig())
  // A failed TLS handshake may also be reported as an 'error' event.
  client.on('error', () => {})
  let result
  try {
    await client.connect()
    const r = await client.query('SELECT 1 AS one')
    result = { ok: r.rows[0].one === 1, transport: transportOf(client) }
  } catch (err) {
    result = { ok: false, error: errorInfo(err) }
  } finally {
    await client.end().catch(() => {})
  }
  process.stdout.write(`${JSON.stringify(result)}\n`)
}

main().catch((err) => {
  process.stderr.write(`probe.js failed: ${err.stack || err}\n`)
  process.exit(1)
})
