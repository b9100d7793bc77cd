// postgres.js through pgferry: every statement goes as a named prepared
// statement (Parse "name", Bind, Execute), SET and LISTEN included. Prints
// "OK <case>" or "FAIL <case>: <what>" per case; router/drivers_e2e_test.go
// runs it with pgferry's URL (a pool of two servers: clients share them).
import postgres from 'postgres'

const url = process.argv[2]
const clients = []
const open = (opts = {}) => {
  const sql = postgres(url, { max: 1, onnotice: () => {}, ...opts })
  clients.push(sql)
  return sql
}
const result = (name, problems) =>
  console.log(problems.length === 0 ? `OK ${name}` : `FAIL ${name}: ${problems.slice(0, 5).join('; ')} (${problems.length} in all)`)
const waitFor = async (cond, ms) => {
  const end = Date.now() + ms
  while (!cond() && Date.now() < end) await new Promise(r => setTimeout(r, 20))
}

async function searchPath() {
  // Each client sets its own search_path, then reads its own table t
  // while the others read theirs on the same two servers.
  const admin = open()
  const n = 8
  for (let i = 0; i < n; i++) {
    await admin.unsafe(`create schema pj_${i}; create table pj_${i}.t(v int); insert into pj_${i}.t values (${i})`)
  }
  const problems = []
  await Promise.all([...Array(n).keys()].map(async i => {
    const sql = open()
    await sql`set search_path to ${sql.unsafe('pj_' + i)}`
    for (let k = 0; k < 25; k++) {
      try {
        const [{ v }] = await sql`select v from t`
        if (v !== i) problems.push(`client ${i} read ${v}`)
      } catch (e) {
        problems.push(`client ${i}: ${e.code} ${e.message}`)
      }
    }
  }))
  result('search_path', problems)
}

async function statementTimeout() {
  // One client's SET stays its own: the others never see it.
  const setter = open()
  await setter`set statement_timeout = '1234ms'`
  const problems = []
  await Promise.all([...Array(6).keys()].map(async i => {
    const sql = open()
    for (let k = 0; k < 25; k++) {
      const [{ statement_timeout: v }] = await sql`show statement_timeout`
      if (v === '1234ms') problems.push(`client ${i} saw the other client's 1234ms`)
      const [{ statement_timeout: own }] = await setter`show statement_timeout`
      if (own !== '1234ms') problems.push(`the setter sees ${own}`)
    }
  }))
  result('statement_timeout', problems)
}

async function listenAPI() {
  // sql.listen: every notification sent after it resolves arrives.
  const listener = open()
  const got = []
  await listener.listen('pj_api', payload => got.push(payload))
  const notifier = open()
  for (let i = 0; i < 50; i++) await notifier`select pg_notify('pj_api', ${String(i)})`
  await waitFor(() => got.length >= 50, 5000)
  result('listen', got.length === 50 ? [] : [`${got.length} of 50 notifications`])
}

async function listenStatement() {
  // LISTEN as a statement (a named prepared one), notifications through
  // onnotify.
  const got = []
  const listener = open({ onnotify: (channel, payload) => { if (channel === 'pj_stmt') got.push(payload) } })
  await listener`listen pj_stmt`
  const notifier = open()
  for (let i = 0; i < 50; i++) await notifier`notify pj_stmt, ${notifier.unsafe("'" + i + "'")}`
  await waitFor(() => got.length >= 50, 5000)
  const problems = got.length === 50 ? [] : [`${got.length} of 50 notifications`]
  await listener`unlisten pj_stmt`
  const before = got.length
  await notifier`notify pj_stmt, 'after'`
  await new Promise(r => setTimeout(r, 300))
  if (got.length !== before) problems.push('a notification arrived after UNLISTEN')
  result('listen statement', problems)
}

async function manyStatements() {
  // More distinct statements than pgferry keeps prepared per server (200):
  // every one still runs its own text.
  const sql = open()
  const other = open()
  const problems = []
  for (let i = 0; i < 300; i++) {
    const [{ v }] = await sql`select ${sql.unsafe(String(i))}::int + ${1} as v`
    if (v !== i + 1) problems.push(`statement ${i} gave ${v}`)
    const [{ w }] = await other`select ${other.unsafe(String(i))}::int * ${2} as w`
    if (w !== i * 2) problems.push(`the other's statement ${i} gave ${w}`)
  }
  result('prepared statements', problems)
}

async function transactions() {
  // sql.begin holds one server through the transaction; a failed one
  // leaves the client's next statements working.
  const sql = open()
  const problems = []
  await sql`create table if not exists pj_tx(v int)`
  await sql.begin(async tx => {
    await tx`insert into pj_tx values (1)`
    await tx`set local statement_timeout = '4321ms'`
  })
  try {
    await sql.begin(async tx => {
      await tx`insert into pj_tx values (2)`
      await tx`select 1/0`
    })
    problems.push('1/0 did not fail')
  } catch (e) {
    if (e.code !== '22012') problems.push(`1/0 gave ${e.code}`)
  }
  const rows = await sql`select v from pj_tx order by v`
  if (rows.map(r => r.v).join(',') !== '1') problems.push(`pj_tx holds ${rows.map(r => r.v)}`)
  const [{ statement_timeout: st }] = await sql`show statement_timeout`
  if (st === '4321ms') problems.push('SET LOCAL outlived its transaction')
  result('transactions', problems)
}

try {
  for (const c of [searchPath, statementTimeout, listenAPI, listenStatement, manyStatements, transactions]) {
    try {
      await c()
    } catch (e) {
      console.log(`FAIL ${c.name}: ${e.code || ''} ${e.message}`)
    }
  }
} finally {
  await Promise.all(clients.map(c => c.end({ timeout: 2 })))
}
