// SPDX-License-Identifier: MIT
// Benchmark peer: a WebSocket echo server on Node's ws (Debian node-ws), the
// usual way to write one: every message back with its type. No compression
// (permessage-deflate off, as in tcpchan). Usage: node node_ws_echo.js
// [--listen HOST:PORT]; prints "listening on HOST:PORT".
'use strict';
const WebSocket = require('ws');

let listen = '127.0.0.1:0';
const i = process.argv.indexOf('--listen');
if (i > 0 && process.argv[i + 1]) listen = process.argv[i + 1];
const colon = listen.lastIndexOf(':');
const wss = new WebSocket.Server({
  host: listen.slice(0, colon),
  port: Number(listen.slice(colon + 1)),
  perMessageDeflate: false,
  maxPayload: 1 << 20,
});
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});
wss.on('listening', () => {
  const a = wss.address();
  console.log(`listening on ${a.address}:${a.port}`);
});
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
