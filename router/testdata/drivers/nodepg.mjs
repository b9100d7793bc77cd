// node-postgres (pg) through pgferry: queries without parameters go as
// simple queries, with parameters by the extended protocol (unnamed, or
// named when the query has a name). Prints "OK <case>" or
// "FAIL <case>: <what>" per case; router/drivers_e2e_test.go runs it with
// pgferry's URL (a pool of two servers: clients share them).
import pg from 'pg'

const url = process.argv[2]
const clients = []
const open = async () => {
  const c = new pg.Client({ connectionString: url })
  await c.connect()
  clients.push(c)
  return c
}
const result = (name, problems) =>
  console.log(problems.length === 0 ? `OK ${name}` : `FAIL ${name}: ${problems.slice(0, 5).join('; ')} (${problems.length} in all)`)
const waitFor = async (cond, ms) => {
  const end = Date.now() + ms
  while (!cond() && Date.now() < end) await new Promise(r => setTimeout(r, 20))
}

async function listenFirst() {
  // Every notification committed after LISTEN returns arrives, the first
  // ones sent right after it too.
  const listener = await open()
  const notifier = await open()
  const got = []
  listener.on('notification', m => { if (m.channel === 'np_first') got.push(m.payload) })
  await listener.query('LISTEN np_first')
  for (let i = 0; i < 50; i++) await notifier.query(`NOTIFY np_first, '${i}'`)
  await waitFor(() => got.length >= 50, 5000)
  const problems = []
  if (got.length !== 50) problems.push(`${got.length} of 50 notifications`)
  else if (got.join(',') !== [...Array(50).keys()].join(',')) problems.push(`out of order: ${got.join(',')}`)
  result('listen', problems)
}

async function namedStatements() {
  // Named statements of several clients, each prepared on whichever server
  // it runs on, never one client's for another's.
  const cs = await Promise.all([...Array(6).keys()].map(() => open()))
  const problems = []
  await Promise.all(cs.map(async (c, i) => {
    for (let k = 0; k < 25; k++) {
      const r = await c.query({ name: 'np_q', text: `select $1::int + ${i * 1000} as v`, values: [k] })
      if (r.rows[0].v !== k + i * 1000) problems.push(`client ${i} got ${r.rows[0].v} for ${k}`)
    }
  }))
  result('named statements', problems)
}

async function settings() {
  // SET by the simple protocol stays the client's, and is gone for others.
  const setter = await open()
  await setter.query("SET search_path TO np_nowhere, public")
  await setter.query("SET application_name = 'np-setter'")
  const cs = await Promise.all([...Array(5).keys()].map(() => open()))
  const problems = []
  await Promise.all(cs.map(async (c, i) => {
    for (let k = 0; k < 20; k++) {
      const r = await c.query("select current_setting('search_path') as sp, current_setting('application_name') as an")
      if (r.rows[0].sp.includes('np_nowhere') || r.rows[0].an === 'np-setter') problems.push(`client ${i} saw the setter's ${JSON.stringify(r.rows[0])}`)
      const own = await setter.query({ text: "select current_setting('search_path') as sp where $1::int = $1", values: [k] })
      if (own.rows[0].sp !== 'np_nowhere, public') problems.push(`the setter sees ${own.rows[0].sp}`)
    }
  }))
  result('settings', problems)
}

async function errors() {
  // A bad statement gets PostgreSQL's error, and the client goes on.
  const c = await open()
  const problems = []
  for (const [sql, code] of [['select * from np_no_such_table', '42P01'], ['selec 1', '42601'], ['select 1/0', '22012']]) {
    try {
      await c.query(sql)
      problems.push(`${sql} did not fail`)
    } catch (e) {
      if (e.code !== code) problems.push(`${sql}: ${e.code}, want ${code}`)
    }
  }
  try {
    await c.query({ text: 'select $1::int', values: ['not a number'] })
    problems.push('a bad parameter did not fail')
  } catch (e) {
    if (e.code !== '22P02') problems.push(`a bad parameter: ${e.code}`)
  }
  const r = await c.query('select 42 as v')
  if (r.rows[0].v !== 42) problems.push('the client did not go on')
  result('errors', problems)
}

try {
  for (const c of [listenFirst, namedStatements, settings, errors]) {
    try {
      await c()
    } catch (e) {
      console.log(`FAIL ${c.name}: ${e.code || ''} ${e.message}`)
    }
  }
} finally {
  await Promise.all(clients.map(c => c.end().catch(() => {})))
}
