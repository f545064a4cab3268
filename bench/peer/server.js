// The usual tutorial design for Plivo status callbacks, done carefully: the peer the
// benchmark compares the ledger with (bench/README.md, "the peer").
//
// Fastify + pg, one process. POST /plivo/status takes a form body, checks the Plivo V3
// signature, then makes ONE idempotent upsert into a one-row-per-message table (the status
// with the higher precedence wins) and answers 200 only after the write has committed.
//
//   PORT=8002 PUBLIC_URL=https://example.com PLIVO_AUTH_TOKEN=... PGHOST=... node server.js
//
// Connection settings come from the standard PG* variables (node-postgres reads them).
"use strict";
const crypto = require("node:crypto");
const fastify = require("fastify")({ logger: false });
const { Pool } = require("pg");

const PORT = Number(process.env.PORT || 8002);
const PUBLIC_URL = process.env.PUBLIC_URL; // the base URL Plivo calls (signatures cover it)
const AUTH_TOKEN = process.env.PLIVO_AUTH_TOKEN;
const pool = new Pool({ max: Number(process.env.POOL_SIZE || 32) });

// Precedence as the ledger's fold ranks statuses: a late "sent" never hides "delivered".
const RANKS = { queued: 2, sent: 3, expired: 4, delivered: 5, undelivered: 5, failed: 5, rejected: 5, read: 6 };

const SCHEMA = `CREATE TABLE IF NOT EXISTS peer_messages (
  message_uuid uuid PRIMARY KEY, status text NOT NULL, status_rank int NOT NULL,
  error_code text, units int, total_amount numeric, mcc text, mnc text,
  payload jsonb NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())`;

const UPSERT = `INSERT INTO peer_messages AS m
  (message_uuid, status, status_rank, error_code, units, total_amount, mcc, mnc, payload)
  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
  ON CONFLICT (message_uuid) DO UPDATE SET status = EXCLUDED.status,
    status_rank = EXCLUDED.status_rank, error_code = EXCLUDED.error_code,
    units = EXCLUDED.units, total_amount = EXCLUDED.total_amount, mcc = EXCLUDED.mcc,
    mnc = EXCLUDED.mnc, payload = EXCLUDED.payload, updated_at = now()
  WHERE m.status_rank <= EXCLUDED.status_rank`;

// Plivo V3: base URL + "?" [+ sorted query + "."] + every body key+value, sorted by key
// then value (repeated keys), then "." + nonce; HMAC-SHA256 with the auth token, base64.
const byKeyThenValue = ([a, x], [b, y]) => (a < b ? -1 : a > b ? 1 : x < y ? -1 : x > y ? 1 : 0);

function v3Signature(rawUrl, body, nonce) {
  const [path, query] = rawUrl.split("?", 2);
  let signed = PUBLIC_URL + path + "?";
  if (query) signed += [...new URLSearchParams(query)].sort(byKeyThenValue).map(([k, v]) => `${k}=${v}`).join("&") + ".";
  const fields = Object.entries(body).flatMap(([key, value]) => [].concat(value).map((v) => [key, v]));
  signed += fields.sort(byKeyThenValue).map(([key, value]) => key + value).join("");
  return crypto.createHmac("sha256", AUTH_TOKEN).update(signed + "." + nonce).digest();
}

function signatureValid(request) {
  const header = request.headers["x-plivo-signature-v3"];
  const nonce = request.headers["x-plivo-signature-v3-nonce"];
  if (!header || !nonce) return false;
  const expected = v3Signature(request.url, request.body, nonce);
  // Plivo may send several comma-separated signatures (token rotation): any one will do.
  return header.split(",").some((part) => {
    const offered = Buffer.from(part.trim(), "base64");
    return offered.length === expected.length && crypto.timingSafeEqual(offered, expected);
  });
}

fastify.register(require("@fastify/formbody"));

fastify.post("/plivo/status", async (request, reply) => {
  const form = request.body || {};
  if (!signatureValid(request)) return reply.code(403).send({ error: "invalid signature" });
  if (!form.MessageUUID || !form.Status) return reply.code(400).send({ error: "MessageUUID and Status are required" });
  const status = String(form.Status).toLowerCase();
  await pool.query(UPSERT, [
    form.MessageUUID, status, RANKS[status] ?? 0, form.ErrorCode || null,
    form.Units ? Number(form.Units) : null, form.TotalAmount || null,
    form.MCC || null, form.MNC || null, JSON.stringify(form),
  ]);
  return { result: "stored" };
});

fastify.get("/health", async () => ({ status: "ok" }));

pool.query(SCHEMA).then(
  () => fastify.listen({ port: PORT, host: "127.0.0.1" }),
).catch((error) => {
  console.error(`peer: cannot start: ${error.message}`);
  process.exit(1);
});
