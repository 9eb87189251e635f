// SPDX-License-Identifier: MIT
// A real WebSocket client (Node's ws, Debian node-ws) against tcpchan-echo
// --framing ws: sizes, types, fragments (1-byte, with a ping between them),
// pings, the close handshake, the close codes the server answers bad input
// with (1009, 1002, 1007), and a plain HTTP request (4xx, then closed).
// Usage: node client.js HOST:PORT. One line per check; exits non-zero on the
// first failure. Every wait is bounded.
'use strict';
const http = require('http');
const WebSocket = require('ws');

const T = 10000 * Number(process.env.TC_TEST_TIMEOUT_MULT || 1);
const MIB = 1 << 20;
const addr = process.argv[2];
const url = `ws://${addr}/echo`;

function bounded(p, what) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), T);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

function open() {
  const ws = new WebSocket(url, { maxPayload: 0 });
  const queue = [];
  const waiters = [];
  ws.on('message', (data, isBinary) => {
    const m = { data, isBinary };
    if (waiters.length) waiters.shift()(m);
    else queue.push(m);
  });
  ws.next = () => bounded(new Promise((resolve) => {
    if (queue.length) resolve(queue.shift());
    else waiters.push(resolve);
  }), 'a message');
  ws.closed = bounded(new Promise((resolve) => ws.on('close', (code) => resolve(code))), 'close');
  ws.on('error', () => {});
  return bounded(new Promise((resolve, reject) => {
    ws.on('open', () => resolve(ws));
    ws.on('unexpected-response', (req, res) => reject(new Error(`status ${res.statusCode}`)));
  }), 'open');
}

function check(cond, what) {
  if (!cond) throw new Error(what);
}

function masked(op, payload, fin = true, rsv = 0) {
  const key = Buffer.from([0x12, 0x34, 0x56, 0x78]);
  const n = payload.length;
  let head;
  if (n < 126) head = Buffer.from([(fin ? 0x80 : 0) | (rsv << 4) | op, 0x80 | n]);
  else throw new Error('short frames only');
  const body = Buffer.from(payload.map((b, i) => b ^ key[i % 4]));
  return Buffer.concat([head, key, body]);
}

async function expectClose(raw, code, what) {
  const ws = await open();
  ws._socket.write(raw);
  const got = await ws.closed;
  check(got === code, `${what}: close code ${got}, want ${code}`);
}

function plainHttp() {
  return bounded(new Promise((resolve, reject) => {
    const [host, port] = [addr.slice(0, addr.lastIndexOf(':')), addr.slice(addr.lastIndexOf(':') + 1)];
    const req = http.get({ host, port, path: '/', agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res));
    });
    req.on('error', reject);
  }), 'plain HTTP');
}

async function main() {
  let ws = await open();
  for (const n of [0, 125, 126, 65535, 65536, MIB]) {
    const data = Buffer.alloc(n, 0).map((_, i) => i % 251);
    ws.send(data);
    let m = await ws.next();
    check(m.isBinary && Buffer.compare(m.data, data) === 0, `binary ${n}`);
    const text = 'é'.repeat(n).slice(0, Math.floor(n / 2));
    ws.send(text);
    m = await ws.next();
    check(!m.isBinary && m.data.toString('utf8') === text, `text ${n}`);
  }
  console.log('sizes 0 125 126 65535 65536 1MiB, text and binary: ok');

  const msg = 'fragments, one byte each';
  for (let i = 0; i < msg.length; i++) ws.send(msg[i], { fin: i === msg.length - 1 });
  let m = await ws.next();
  check(!m.isBinary && m.data.toString() === msg, '1-byte fragments');
  console.log('1-byte fragments: ok');

  const pong = bounded(new Promise((resolve) => ws.once('pong', (d) => resolve(d))), 'pong');
  ws.send(Buffer.from('first half, '), { fin: false });
  ws.ping('between');
  ws.send(Buffer.from('second half'), { fin: true });
  m = await ws.next();
  check(m.data.toString() === 'first half, second half', 'ping between fragments');
  check((await pong).toString() === 'between', 'pong payload');
  console.log('ping between fragments: ok');

  ws.send(Buffer.alloc(MIB + 1));
  check(await ws.closed === 1009, 'over max-frame: 1009');
  console.log('over max-frame: 1009: ok');

  ws = await open();
  ws.close(4000, 'bye');
  check(await ws.closed === 4000, 'close handshake');
  console.log('close handshake: ok');

  await expectClose(Buffer.from([0x82, 3, 97, 98, 99]), 1002, 'unmasked');
  await expectClose(masked(1, [...Buffer.from('rsv')], true, 4), 1002, 'reserved bit');
  await expectClose(masked(5, [...Buffer.from('op')]), 1002, 'reserved opcode');
  console.log('bad frames (unmasked, reserved bit, reserved opcode): 1002: ok');
  await expectClose(masked(1, [0xed, 0xa0, 0x80]), 1007, 'bad UTF-8');
  console.log('invalid UTF-8: 1007: ok');

  const res = await plainHttp();
  check(res.statusCode >= 400 && res.statusCode < 500, `plain HTTP: ${res.statusCode}`);
  check((res.headers.connection || '').toLowerCase() === 'close', 'plain HTTP: Connection: close');
  console.log(`plain HTTP without Upgrade: ${res.statusCode}, closed: ok`);
}

main().then(() => process.exit(0), (e) => {
  console.error(`FAIL: ${e.message}`);
  process.exit(1);
});
