// node-fetch.js SCENARIO TRUTH_FILE BASE_URL: GETs with node's global fetch
// (undici) and records the truth from undici's own diagnostics channels:
// 'undici:client:connected' gives each new socket (its localPort), and
// 'undici:client:sendHeaders' the socket each request went out on. On each
// socket, 'end' says the server's FIN arrived; a 'close' with no 'end'
// before it is undici closing the socket itself. (undici 6 dials for a
// fetch sent right after the previous one was read to its end, before it
// counts that socket free: such a connection is idle_available.)
//
//   node-fetch-client-idle-timeout: a 5 s pause against nginx keepalive_timeout
//     30s; undici's keepAliveTimeout (4 s by default) closes the idle socket.
//   node-fetch-server-idle-timeout: 1.5 s pauses against nginx
//     keepalive_timeout 1s; the server closes the idle socket.
'use strict';
const dc = require('diagnostics_channel');
const fs = require('fs');

const [scenario, truthFile, base] = process.argv.slice(2);
const plans = {
  'node-fetch-client-idle-timeout': { pause: 5000, expect: 'client_idle_timeout', server: 'nginx keepalive_timeout 30s' },
  'node-fetch-server-idle-timeout': { pause: 1500, expect: 'server_idle_timeout', server: 'nginx keepalive_timeout 1s' },
};
const plan = plans[scenario];
if (!plan) throw new Error('unknown scenario ' + scenario);

const sockets = []; // in connect order: {port, end, close}
const byPort = new Map();
let lastSent = null;
dc.channel('undici:client:connected').subscribe(({ socket }) => {
  const s = { port: socket.localPort, end: null, close: null };
  sockets.push(s);
  byPort.set(s.port, s);
  socket.on('end', () => { s.end = performance.now(); });
  socket.on('close', () => { s.close = performance.now(); });
});
dc.channel('undici:client:sendHeaders').subscribe(({ socket }) => { lastSent = socket.localPort; });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function fail(what) {
  console.error('the scenario did not run as built: ' + what + '\n' + JSON.stringify(sockets));
  process.exit(1);
}

(async () => {
  const connections = [];
  const steps = ['/a.txt', '/b.txt', 'pause', '/c.txt', 'pause', '/a.txt'];
  for (const step of steps) {
    if (step === 'pause') { await sleep(plan.pause); continue; }
    const before = sockets.length;
    const res = await fetch(base + step);
    await res.text(); // read to the end: the exchange is over for this script
    if (res.status !== 200) fail(step + ': ' + res.status);
    const port = lastSent;
    if (sockets.length === before) continue;
    if (sockets.length !== before + 1 || sockets[before].port !== port) fail(step + ': new sockets');
    if (before === 0) {
      connections.push({ client_port: port, code: 'first' });
      continue;
    }
    // Every earlier fetch was read to its end before this one began: an
    // earlier socket still open was idle.
    const open = sockets.slice(0, before).filter((o) => o.close === null);
    if (open.length) {
      connections.push({ client_port: port, code: 'idle_available', note: 'undici dialled while port ' +
        open.map((o) => o.port).join(', ') + " was open, its response read to the end (no 'close' yet)" });
      continue;
    }
    const last = sockets.slice(0, before).reduce((a, b) => (b.close > a.close ? b : a));
    const code = last.end !== null && last.end <= last.close ? 'server_idle_timeout' : 'client_idle_timeout';
    if (code !== plan.expect) fail('port ' + last.port + ' ended as ' + code);
    connections.push({ client_port: port, code, note: code === 'client_idle_timeout'
      ? `port ${last.port}: undici closed it idle during a ${plan.pause} ms pause, with no FIN from the server ('close' with no 'end')`
      : `port ${last.port}: the server's FIN came during a ${plan.pause} ms pause ('end' before 'close')` });
  }
  const head = {
    scenario,
    client: `node ${process.version} fetch (undici ${process.versions.undici}), ${plan.pause} ms pauses`,
    server: plan.server,
    truth_from: "undici's diagnostics channels 'undici:client:connected' (each socket's localPort) and " +
      "'undici:client:sendHeaders' (the socket of each request), and each socket's 'end' (the server's FIN) and 'close'",
  };
  const lines = [JSON.stringify(head).slice(0, -1) + ', "connections": ['];
  connections.forEach((c, i) => lines.push('  ' + JSON.stringify(c) + (i + 1 < connections.length ? ',' : '')));
  lines.push(']}');
  fs.writeFileSync(truthFile, lines.join('\n') + '\n');
})().catch((e) => { console.error(e); process.exit(1); });
