// node-idle-timeout.js TRUTH_FILE BASE_URL: GETs with node's http module and
// one http.Agent({keepAlive: true, timeout: 1000}); pauses 2 s twice, so the
// agent's idle timer (the 'timeout' event on a free socket) destroys the idle
// connection and the next request opens a new one. Writes the truth file: one
// entry per socket, its local port from socket.localPort, in the order the
// agent created them.
'use strict';
const fs = require('fs');
const http = require('http');

const [truthFile, base] = process.argv.slice(2);
const agent = new http.Agent({ keepAlive: true, timeout: 1000, maxSockets: 10 });
const events = []; // what the client saw, in order
const connections = [];

function get(path) {
  return new Promise((resolve, reject) => {
    const req = http.get(base + path, { agent }, (res) => {
      res.resume();
      res.on('end', () => {
        if (res.statusCode !== 200) reject(new Error(path + ': ' + res.statusCode));
        else resolve({ port: req.socket.localPort, reused: req.reusedSocket });
      });
    });
    req.on('socket', (s) => {
      if (s.causeTracked) return;
      s.causeTracked = true;
      // A destroyed socket no longer knows its local port: keep it from connect.
      let port;
      s.on('connect', () => { port = s.localPort; events.push({ kind: 'connect', port }); });
      s.on('timeout', () => events.push({ kind: 'timeout', port }));
      s.on('close', () => events.push({ kind: 'close', port, destroyedByClient: !s.readableEnded }));
    });
    req.on('error', reject);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

(async () => {
  const plan = ['/a.txt', '/b.txt', 'pause', '/c.txt', '/a.txt', 'pause', '/b.txt'];
  let paused = false;
  let prev = null;
  for (const step of plan) {
    if (step === 'pause') { await sleep(2000); paused = true; continue; }
    const before = events.length;
    const r = await get(step);
    if (!r.reused) {
      if (prev === null) {
        connections.push({ client_port: r.port, code: 'first' });
      } else {
        // The old socket must have timed out on the client's own timer and
        // been closed while nothing had come from the server.
        const mine = events.slice(0, before).filter((e) => e.port === prev);
        const timedOut = mine.some((e) => e.kind === 'timeout');
        const closed = mine.find((e) => e.kind === 'close');
        if (!paused || !timedOut || !closed || !closed.destroyedByClient) {
          throw new Error('not a client idle timeout: ' + JSON.stringify(events));
        }
        connections.push({ client_port: r.port, code: 'client_idle_timeout',
          note: `port ${prev}: the agent's 1000 ms idle timeout fired during a 2 s pause and it destroyed the socket` });
      }
      prev = r.port;
    } else if (r.port !== prev) {
      throw new Error('reused an unexpected socket: ' + JSON.stringify(events));
    }
    paused = false;
  }
  agent.destroy();
  const head = {
    scenario: 'node-client-idle-timeout',
    client: `node ${process.version} http.Agent({keepAlive: true, timeout: 1000})`,
    server: 'nginx keepalive_timeout 30s',
    truth_from: "node's own socket events: req.reusedSocket, socket.localPort, the free socket's 'timeout' event " +
      "and its 'close' before the server had ended it",
  };
  const lines = [JSON.stringify(head).slice(0, -1) + ', "connections": ['];
  connections.forEach((c, i) => lines.push('  ' + JSON.stringify(c) + (i + 1 < connections.length ? ',' : '')));
  lines.push(']}');
  fs.writeFileSync(truthFile, lines.join('\n') + '\n');
})().catch((e) => { console.error(e); process.exit(1); });
