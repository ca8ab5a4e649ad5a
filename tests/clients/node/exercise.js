'use strict'
// node-postgres (pg) driven through a SQL Proxy worker by tests/integration/test_node.py.
//
// Runs a fixed sequence of protocol paths a Node application uses and prints ONE JSON object
// on stdout describing what came back. The Python test runs the same script against the
// PostgreSQL server directly and through the worker and compares the two objects, and also
// checks them against exact expected values. Only deterministic values are printed (no
// backend pids, no timestamps of now): where a property such as "one backend for the whole
// transaction" matters, the script prints the boolean outcome instead.
//
// Environment: see config.js; EXERCISE_TABLE names a scratch table (dropped and recreated),
// EXERCISE_NOTIFY=1 adds LISTEN/NOTIFY (session pooling only).
// Exit status: 0 with the JSON on stdout, 1 with the error on stderr.

const crypto = require('crypto')
const { Client, Pool } = require('pg')
const { clientConfig, transportOf, errorInfo } = require('./config')

const TABLE = process.env.EXERCISE_TABLE || ''
if (!/^[a-z_][a-z0-9_]*$/.test(TABLE)) {
  throw new Error('EXERCISE_TABLE must be a plain lower-case identifier')
}

const range = (n) => Array.from({ length: n }, (_, i) => i)

// The error a promise is expected to reject with; an unexpected success is a failure.
async function expectError(promise, what) {
  try {
    await promise
  } catch (err) {
    return errorInfo(err)
  }
  throw new Error(`expected an error from ${what}`)
}

async function simpleQueries(client) {
  const one = await client.query("SELECT 1 AS one, 'two'::text AS two, NULL::int AS nothing, true AS yes")
  const multi = await client.query('SELECT 1 AS a; SELECT 2 AS b, 3 AS c')
  const notices = []
  const onNotice = (msg) => notices.push([msg.severity, msg.message])
  client.on('notice', onNotice)
  await client.query("DO $$BEGIN RAISE NOTICE 'hello from node'; RAISE WARNING 'careful'; END$$")
  client.off('notice', onNotice)
  return {
    rows: one.rows,
    fields: one.fields.map((f) => [f.name, f.dataTypeID]),
    command: [one.command, one.rowCount],
    multi: multi.map((r) => r.rows),
    notices,
  }
}

async function parameterizedQueries(client) {
  const series = await client.query('SELECT $1::int * x AS v FROM generate_series(1, 3) x', [7])
  const typed = await client.query(
    'SELECT $1::text AS t, $2::bool AS b, $3::numeric AS n, $4::jsonb AS j, $5::bytea AS by, ' +
      '$6::int[] AS arr, $7::int AS nul, $8::timestamptz AS ts',
    [
      'héllo ✓ "quoted"',
      true,
      '12345678901234567890.5',
      { k: [1, 'x'], nested: { ok: null } },
      Buffer.from([0, 1, 2, 255]),
      [1, 2, 3],
      null,
      new Date('2024-02-29T12:34:56.789Z'),
    ],
  )
  const row = typed.rows[0]
  // Fetched in batches of 100 with Execute(max rows) + Flush: the server suspends the portal
  // ten times before the Sync, so the proxy sees a long extended-protocol unit.
  const batched = await client.query({ text: 'SELECT x FROM generate_series(1, 1000) x', rows: 100 })
  return {
    series: series.rows.map((r) => r.v),
    typed: { ...row, by: row.by.toString('hex'), ts: row.ts.toISOString() },
    batched: [batched.rows.length, batched.rows[0].x, batched.rows[999].x],
  }
}

async function namedStatements(client) {
  const uses = []
  // Two named statements, interleaved and reused: Parse once each, then Bind by name.
  for (const i of range(6)) {
    const a = await client.query({ name: 'node_double', text: 'SELECT $1::int * 2 AS d', values: [i] })
    const b = await client.query({
      name: 'node_concat',
      text: "SELECT $1::text || '-' || $2::text AS c",
      values: [`a${i}`, 'b'],
    })
    uses.push([a.rows[0].d, b.rows[0].c])
  }
  return { uses }
}

async function transactions(client) {
  const t = TABLE
  await client.query(`DROP TABLE IF EXISTS ${t}`)
  await client.query(`CREATE TABLE ${t} (id int PRIMARY KEY, note text NOT NULL)`)
  const ids = async () => (await client.query(`SELECT id FROM ${t} ORDER BY id`)).rows.map((r) => r.id)
  const backend = async () => (await client.query('SELECT pg_backend_pid() AS p')).rows[0].p

  await client.query('BEGIN')
  const pid = await backend()
  await client.query(`INSERT INTO ${t} VALUES ($1, $2), ($3, $4)`, [1, 'one', 2, 'two'])
  const pidAgain = await backend()
  await client.query('COMMIT')
  const committed = await ids()

  await client.query('BEGIN')
  await client.query(`INSERT INTO ${t} VALUES (3, 'three')`)
  const inside = await ids()
  await client.query('ROLLBACK')
  const rolledBack = await ids()

  // An error aborts the transaction: later statements fail until ROLLBACK.
  await client.query('BEGIN')
  const duplicate = await expectError(client.query(`INSERT INTO ${t} VALUES (1, 'dup')`), 'dup')
  const aborted = await expectError(client.query('SELECT 1'), 'aborted tx')
  await client.query('ROLLBACK')

  await client.query('BEGIN')
  await client.query(`INSERT INTO ${t} VALUES (4, 'four')`)
  await client.query('SAVEPOINT s')
  const inSavepoint = await expectError(client.query(`INSERT INTO ${t} VALUES (2, 'dup')`), 'dup')
  await client.query('ROLLBACK TO SAVEPOINT s')
  await client.query(`INSERT INTO ${t} VALUES ($1, $2)`, [5, 'five'])
  await client.query('COMMIT')
  const final = await client.query(`SELECT id, note FROM ${t} ORDER BY id`)
  await client.query(`DROP TABLE ${t}`)
  return {
    sameBackend: pid === pidAgain,
    committed,
    inside,
    rolledBack,
    duplicate: duplicate.code,
    aborted: aborted.code,
    inSavepoint: inSavepoint.code,
    final: final.rows,
  }
}

async function errorsMidStream(client) {
  const simple = await expectError(
    client.query('SELECT 10 / (3 - x) AS v FROM generate_series(1, 5) x'),
    'simple division',
  )
  const extended = await expectError(
    client.query('SELECT 10 / ($1::int - x) AS v FROM generate_series(1, 5) x', [3]),
    'extended division',
  )
  const missing = await expectError(client.query('SELECT * FROM no_such_table_node'), 'missing')
  const syntax = await expectError(client.query({ name: 'node_broken', text: 'SELEC 1' }), 'syntax')
  const badParam = await expectError(client.query('SELECT $1::int AS i', ['not a number']), 'param')
  // The connection and its named statements survive all of the above.
  const reuse = await client.query({ name: 'node_double', text: 'SELECT $1::int * 2 AS d', values: [21] })
  const after = await client.query("SELECT 'still here' AS s")
  return {
    simple,
    extended,
    missing,
    syntax,
    badParam,
    reuse: reuse.rows[0].d,
    after: after.rows[0].s,
  }
}

async function manyRows(client) {
  const r = await client.query('SELECT x, md5(x::text) AS h FROM generate_series(1, 50000) x')
  const digest = crypto.createHash('sha256')
  let sum = 0
  for (const row of r.rows) {
    sum += row.x
    digest.update(`${row.h}\n`)
  }
  const wide = await client.query("SELECT repeat('x', 1000000) AS w, length($1::text) AS echoed", [
    'y'.repeat(500000),
  ])
  return {
    count: r.rows.length,
    sum,
    sha256: digest.digest('hex'),
    wide: [wide.rows[0].w.length, wide.rows[0].echoed],
  }
}

async function pipelined(config) {
  // pg's pipeline mode: every query is sent at once, each with its own Sync.
  const client = new Client({ ...config, pipeline: true })
  await client.connect()
  try {
    const queries = range(12).map((i) => {
      if (i === 6) {
        return client.query('SELECT 1 / 0 AS boom')
      }
      const name = i % 2 ? 'pipe_named' : undefined
      return client.query({ name, text: 'SELECT $1::int + 100 AS v', values: [i] })
    })
    const settled = await Promise.allSettled(queries)
    return settled.map((s) => (s.status === 'fulfilled' ? s.value.rows[0].v : s.reason.code))
  } finally {
    await client.end()
  }
}

async function pooled(config) {
  const pool = new Pool({ ...config, max: 5 })
  try {
    const plain = await Promise.all(
      range(20).map((i) => pool.query('SELECT $1::int AS i', [i]).then((r) => r.rows[0].i)),
    )
    const named = await Promise.all(
      range(20).map((i) =>
        pool.query({ name: 'pool_triple', text: 'SELECT $1::int * 3 AS t', values: [i] }).then((r) => r.rows[0].t),
      ),
    )
    // Several pooled clients hold a transaction at once; each must keep one backend throughout.
    const transactions = await Promise.all(
      range(5).map(async (i) => {
        const c = await pool.connect()
        try {
          await c.query('BEGIN')
          const a = await c.query('SELECT pg_backend_pid() AS p, txid_current() AS x')
          // Idle in transaction on the client side while the other clients run theirs.
          await new Promise((resolve) => setTimeout(resolve, 50))
          const b = await c.query('SELECT pg_backend_pid() AS p, txid_current() AS x, $1::int AS i', [i])
          await c.query('COMMIT')
          return [b.rows[0].i, a.rows[0].p === b.rows[0].p && a.rows[0].x === b.rows[0].x]
        } finally {
          c.release()
        }
      }),
    )
    const errors = await Promise.allSettled(
      range(6).map((i) => pool.query(i % 3 === 0 ? 'SELECT 1 / 0' : `SELECT ${i} AS i`)),
    )
    return {
      plain,
      named,
      transactions,
      errors: errors.map((s) => (s.status === 'fulfilled' ? s.value.rows[0].i : s.reason.code)),
    }
  } finally {
    await pool.end()
  }
}

async function notifications(config) {
  const listener = new Client(config)
  const sender = new Client(config)
  await listener.connect()
  await sender.connect()
  try {
    const received = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no notification within 5s')), 5000)
      listener.on('notification', (msg) => {
        clearTimeout(timer)
        resolve({ channelMatches: msg.channel === `${TABLE}_chan`, payload: msg.payload })
      })
    })
    await listener.query(`LISTEN ${TABLE}_chan`)
    await sender.query(`NOTIFY ${TABLE}_chan, 'payload from node'`)
    return await received
  } finally {
    await Promise.all([listener.end(), sender.end()])
  }
}

async function main() {
  const config = clientConfig()
  const client = new Client(config)
  await client.connect()
  const result = { transport: transportOf(client) }
  try {
    result.simple = await simpleQueries(client)
    result.parameterized = await parameterizedQueries(client)
    result.named = await namedStatements(client)
    result.transactions = await transactions(client)
    result.errors = await errorsMidStream(client)
    result.manyRows = await manyRows(client)
  } finally {
    await client.end()
  }
  result.pipeline = await pipelined(config)
  result.pool = await pooled(config)
  result.notify = process.env.EXERCISE_NOTIFY === '1' ? await notifications(config) : null
  process.stdout.write(`${JSON.stringify(result)}\n`)
}

main().catch((err) => {
  process.stderr.write(`exercise.js failed: ${err.stack || err}\n${JSON.stringify(errorInfo(err))}\n`)
  process.exit(1)
})
