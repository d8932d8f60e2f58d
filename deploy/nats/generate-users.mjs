#!/usr/bin/env node
// Generates fleet-users.conf (included by nats-server.conf) and one NKey seed file per user:
// vehicle-<id> for each vehicle, engine (the fleetflow workers) and ops (fleetctl).
//
//   node deploy/nats/generate-users.mjs --out DIR (--vehicles ID,ID,... | --vehicle-count N)
//        [--stream TELEMETRY] [--durable fleetflow] [--partitions 16] [--partition-prefix telemetry]
//        [--partition-mapping account|stream]
//        [--buckets telemetry,fleetflow_members,fleetflow_handover]
//        [--dead-letter-stream DEADLETTER] [--dead-letter-prefix deadletter]
//        [--alarm-stream ALARMS] [--alarm-prefix alarm]
//        [--leaves NAME,NAME,...]
//
// --partitions and --partition-prefix must match the account's mapping in nats-server.conf and
// the nats_source of the pipeline: the engine may use the durables <durable>-0 ... <durable>-(N-1)
// and nothing else (--partitions 0: the one durable <durable>, an unpartitioned pipeline).
// --partition-mapping stream: the account has no mapping, the stream transforms its subjects
// (nats-server 2.10 or later, docs/deploy.md "A managed NATS"): vehicles then publish on their
// own subjects, unmapped.
// --alarm-stream and --alarm-prefix must match the pipeline's rule nodes: the engine publishes
// their alarm events on <prefix>.> (stored in that stream, created or updated by the engine) and
// delivers them to the vehicles on vehicle.<id>.cmd.alarm.
// --leaves: one user leaf-<name> per edge leaf node (nats-leaf.conf, the hub's leafnodes.conf,
// docs/deploy.md "Edge leaf nodes"), and the engine may update its stream (to add the edges as
// its sources: nats_source edge_domains). For an edge's own fleet-users.conf, run the script
// with --partition-mapping stream (the edge maps nothing).
//
// DIR/fleet-users.conf holds public keys and permissions only (not secret: a ConfigMap is fine).
// DIR/seeds/<user>.nk are the private seeds (mode 0600): give each vehicle its own, the engine
// its own (Secret fleetflow-nats, key engine.nk). A seed that already exists is kept, so running
// the script again with more vehicles keeps every key already handed out.
// Needs only Node.js (ed25519 from node:crypto); nothing is downloaded.
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";

const usage = `usage: generate-users.mjs --out DIR (--vehicles ID,ID,... | --vehicle-count N)
       [--stream TELEMETRY] [--durable fleetflow] [--partitions 16] [--partition-prefix telemetry]
       [--partition-mapping account|stream] [--buckets telemetry,fleetflow_members,fleetflow_handover]
       [--dead-letter-stream DEADLETTER] [--dead-letter-prefix deadletter]
       [--alarm-stream ALARMS] [--alarm-prefix alarm]
       [--leaves NAME,NAME,...]`;

// The vehicle id of the engine's mapping probe (nats_source, check_mapping): it publishes
// vehicle.<probe>.probe and expects it back as <partition prefix>.<n>.<probe>.probe.
const PROBE_VEHICLE = "_fleetflow_probe";

function parseArgs(argv) {
  const a = {
    stream: "TELEMETRY",
    durable: "fleetflow",
    partitions: "16",
    partitionPrefix: "telemetry",
    partitionMapping: "account",
    buckets: "telemetry,fleetflow_members,fleetflow_handover",
    deadLetterStream: "DEADLETTER",
    deadLetterPrefix: "deadletter",
    alarmStream: "ALARMS",
    alarmPrefix: "alarm",
    leaves: "",
  };
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i];
    if (key === "-h" || key === "--help") {
      console.log(usage);
      process.exit(0);
    }
    const value = argv[++i];
    if (!key.startsWith("--") || value === undefined) fail(`bad argument ${key}\n${usage}`);
    a[key.slice(2).replace(/-([a-z])/g, (_, c) => c.toUpperCase())] = value;
  }
  if (!a.out) fail(`--out is required\n${usage}`);
  if (a.vehicles) {
    a.vehicleIds = a.vehicles.split(",").filter((v) => v);
  } else if (a.vehicleCount) {
    const n = Number(a.vehicleCount);
    if (!Number.isInteger(n) || n < 0) fail("--vehicle-count must be a whole number");
    a.vehicleIds = Array.from({ length: n }, (_, i) => String(i + 1));
  } else {
    fail(`give --vehicles or --vehicle-count\n${usage}`);
  }
  // The wire contract's token rule (docs: 1-64 of [A-Za-z0-9_-]); also keeps subjects literal.
  for (const id of a.vehicleIds) {
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(id)) fail(`vehicle id '${id}' is not 1-64 of [A-Za-z0-9_-]`);
  }
  for (const name of [a.stream, a.durable, a.deadLetterStream, a.alarmStream, ...a.buckets.split(",")]) {
    if (!/^[A-Za-z0-9_-]+$/.test(name)) fail(`'${name}' is not a valid stream/consumer/bucket name`);
  }
  for (const token of [a.partitionPrefix, ...a.deadLetterPrefix.split("."), ...a.alarmPrefix.split(".")]) {
    if (!/^[A-Za-z0-9_-]+$/.test(token)) fail(`'${token}' is not a subject token`);
  }
  a.partitionCount = Number(a.partitions);
  if (!Number.isInteger(a.partitionCount) || a.partitionCount < 0 || a.partitionCount > 1024) {
    fail("--partitions must be a whole number from 0 to 1024");
  }
  if (!["account", "stream"].includes(a.partitionMapping)) {
    fail("--partition-mapping must be account or stream");
  }
  a.bucketNames = a.buckets.split(",").filter((b) => b);
  a.leafNames = a.leaves.split(",").filter((l) => l);
  for (const name of a.leafNames) {
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(name)) fail(`leaf '${name}' is not 1-64 of [A-Za-z0-9_-]`);
  }
  return a;
}

function fail(message) {
  console.error(`generate-users.mjs: ${message}`);
  process.exit(2);
}

// --- NKeys (github.com/nats-io/nkeys): base32 of prefix byte(s) + key + CRC-16/XMODEM (LE) ---
const PREFIX_SEED = 18 << 3;
const PREFIX_USER = 20 << 3;
const BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

function crc16(bytes) {
  let crc = 0;
  for (const b of bytes) {
    crc ^= b << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}

function base32Encode(bytes) {
  let bits = 0;
  let value = 0;
  let out = "";
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += BASE32[(value << (5 - bits)) & 31];
  return out;
}

function base32Decode(text) {
  let bits = 0;
  let value = 0;
  const out = [];
  for (const ch of text) {
    const v = BASE32.indexOf(ch);
    if (v < 0) throw new Error("not base32");
    value = (value << 5) | v;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

function withCrc(raw) {
  const crc = crc16(raw);
  return Buffer.concat([raw, Buffer.from([crc & 0xff, crc >> 8])]);
}

function encodeSeed(seed32) {
  const raw = Buffer.concat([
    Buffer.from([PREFIX_SEED | (PREFIX_USER >> 5), (PREFIX_USER & 31) << 3]),
    seed32,
  ]);
  return base32Encode(withCrc(raw));
}

function decodeSeed(text) {
  const raw = base32Decode(text.trim());
  const body = raw.subarray(0, raw.length - 2);
  const crc = raw[raw.length - 2] | (raw[raw.length - 1] << 8);
  if (raw.length !== 36 || crc16(body) !== crc || body[0] !== (PREFIX_SEED | (PREFIX_USER >> 5))) {
    throw new Error("not a user NKey seed");
  }
  return body.subarray(2);
}

const PKCS8_ED25519 = Buffer.from("302e020100300506032b657004220420", "hex");

function publicKeyOf(seed32) {
  const privateKey = crypto.createPrivateKey({
    key: Buffer.concat([PKCS8_ED25519, seed32]),
    format: "der",
    type: "pkcs8",
  });
  const spki = crypto.createPublicKey(privateKey).export({ format: "der", type: "spki" });
  return base32Encode(withCrc(Buffer.concat([Buffer.from([PREFIX_USER]), spki.subarray(-32)])));
}

/// The user's seed file: kept when it exists, created (0600) otherwise. Returns the public key.
function userKey(seedDir, user) {
  const file = path.join(seedDir, `${user}.nk`);
  let seed32;
  if (fs.existsSync(file)) {
    try {
      seed32 = decodeSeed(fs.readFileSync(file, "utf8"));
    } catch (e) {
      fail(`${file}: ${e.message}`);
    }
  } else {
    seed32 = crypto.randomBytes(32);
    fs.writeFileSync(file, `${encodeSeed(seed32)}\n`, { mode: 0o600 });
  }
  return publicKeyOf(seed32);
}

// --- permissions ---
const q = (s) => JSON.stringify(s);
const list = (subjects) => `[${subjects.map(q).join(", ")}]`;

// Each vehicle's private reply subjects: fleet-sensor's default --inbox-prefix. The stream's
// acknowledgements (fleet-sensor --ack jetstream) come there.
const vehicleInbox = (id) => `_INBOX.vehicle.${id}`;

/// The partition nats-server's mapping function partition(N,1) gives a vehicle id: FNV-1a
/// (32 bits) of the token, modulo N.
function partitionOf(id, partitions) {
  let h = 0x811c9dc5;
  for (const b of Buffer.from(id, "utf8")) {
    h ^= b;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h % partitions;
}

function vehiclePermissions(id, { partitionCount, partitionPrefix, partitionMapping }) {
  return {
    // Samples and status only: vehicle.<id>.<sensor> and vehicle.<id>.status (three tokens; the
    // four-token command subjects are not the vehicle's to publish). nats-server (2.9) applies
    // the account's mapping before it checks publish permissions, so with partitions the
    // permission names the mapped subject: <prefix>.<its partition>.<id>.*, exactly where the
    // mapping puts vehicle.<id>.* and nowhere else (not another partition, not another vehicle).
    // A stream's transform (--partition-mapping stream) rewrites only what it stores.
    publish: [
      partitionCount > 0 && partitionMapping === "account"
        ? `${partitionPrefix}.${partitionOf(id, partitionCount)}.${id}.*`
        : `vehicle.${id}.*`,
    ],
    // Its own commands (the engine's alarms among them: vehicle.<id>.cmd.alarm), the fleet-wide
    // status request (firmware/control.hpp) and its own inbox.
    subscribe: [`vehicle.${id}.cmd.*`, "fleet.cmd.status", `${vehicleInbox(id)}.>`],
  };
}

function enginePermissions(a) {
  const { stream, durable, partitionCount, partitionPrefix, bucketNames } = a;
  const publish = [
    "$JS.API.INFO",
    "$JS.API.STREAM.NAMES",
    // The telemetry stream (created on first start when missing), and the last message of a
    // partition's subjects: a quiet consumer's "nothing pending" is confirmed with the stream's
    // leader (docs/semantics.md).
    `$JS.API.STREAM.INFO.${stream}`,
    `$JS.API.STREAM.CREATE.${stream}`,
    `$JS.API.STREAM.MSG.GET.${stream}`,
  ];
  // Edge leaf nodes: the engine adds their streams to the stream's sources.
  if (a.leafNames.length > 0) publish.push(`$JS.API.STREAM.UPDATE.${stream}`);
  if (partitionCount > 0) {
    // Without the account mapping (a managed NATS), a new partitioned stream transforms its own
    // subjects: the engine first checks that the server can, with a stream of its own that it
    // creates and deletes (partition_mapping in docs/operators/nats_source.md).
    publish.push(
      "$JS.API.STREAM.CREATE.FLEETFLOW_TRANSFORM_PROBE",
      "$JS.API.STREAM.DELETE.FLEETFLOW_TRANSFORM_PROBE",
    );
  }
  // One durable pull consumer per partition (created by the worker that first reads it): info,
  // create, fetch, acknowledge. Not delete: a consumer's position outlives every worker.
  const durables =
    partitionCount > 0
      ? Array.from({ length: partitionCount }, (_, n) => `${durable}-${n}`)
      : [durable];
  for (const d of durables) {
    publish.push(
      `$JS.API.CONSUMER.INFO.${stream}.${d}`,
      `$JS.API.CONSUMER.CREATE.${stream}.${d}`,
      `$JS.API.CONSUMER.CREATE.${stream}.${d}.>`,
      `$JS.API.CONSUMER.DURABLE.CREATE.${stream}.${d}`,
      `$JS.API.CONSUMER.MSG.NEXT.${stream}.${d}`,
      `$JS.ACK.${stream}.${d}.>`,
    );
  }
  // Dead letters: rejected messages published unchanged to <prefix>.<reason>.<subject>, stored
  // in their own stream (created when missing) and acknowledged by it.
  publish.push(
    `$JS.API.STREAM.INFO.${a.deadLetterStream}`,
    `$JS.API.STREAM.CREATE.${a.deadLetterStream}`,
    `${a.deadLetterPrefix}.>`,
  );
  // Alarms of the rule nodes: events published on <prefix>.> and stored in their own stream
  // (created when missing, updated when its settings change; the stream's acknowledgements come
  // to the engine's inboxes), and delivered to each vehicle on vehicle.<id>.cmd.alarm, where the
  // commands are (sleep, wake and rate too: the engine may command vehicles).
  publish.push(
    `$JS.API.STREAM.INFO.${a.alarmStream}`,
    `$JS.API.STREAM.CREATE.${a.alarmStream}`,
    `$JS.API.STREAM.UPDATE.${a.alarmStream}`,
    `${a.alarmPrefix}.>`,
    "vehicle.*.cmd.*",
  );
  for (const bucket of bucketNames) {
    const s = `KV_${bucket}`;
    publish.push(
      `$JS.API.STREAM.INFO.${s}`,
      `$JS.API.STREAM.CREATE.${s}`,
      `$JS.API.STREAM.MSG.GET.${s}`,
      `$JS.API.DIRECT.GET.${s}.>`,
      // Watches: ephemeral ordered consumers, their flow control, their removal.
      `$JS.API.CONSUMER.CREATE.${s}`,
      `$JS.API.CONSUMER.CREATE.${s}.>`,
      `$JS.API.CONSUMER.INFO.${s}.>`,
      `$JS.API.CONSUMER.DELETE.${s}.>`,
      `$JS.FC.${s}.>`,
      `$KV.${bucket}.>`,
    );
  }
  // Replies to its API requests, KV acknowledgements and watch deliveries arrive on inboxes;
  // the vehicles' inboxes are theirs alone.
  const subscribe = ["_INBOX.>"];
  if (partitionCount > 0) {
    // The mapping probe: published on vehicle.<probe>.probe (refused by JetStream through its
    // Nats-Expected-Stream header, so never stored), heard back after the mapping. The server
    // checks the publish permission on the mapped subject, in whichever partition the server's
    // mapping puts it (so a partition count that differs from the pipeline's is reported as
    // such); without a mapping, on vehicle.<probe>.probe itself (reported as a missing mapping).
    // No other vehicle subject is the engine's to publish (but the commands above); it reads
    // telemetry only from the stream.
    const probe = `${partitionPrefix}.*.${PROBE_VEHICLE}.probe`;
    publish.push(`vehicle.${PROBE_VEHICLE}.probe`, probe);
    subscribe.push(probe);
  }
  return { publish, subscribe, subscribeDeny: [`${vehicleInbox("*")}.>`] };
}

function opsPermissions() {
  // fleetctl: commands to any vehicle, replies on its inboxes (not on the vehicles').
  return {
    publish: ["vehicle.*.cmd.*", "fleet.cmd.status"],
    subscribe: ["_INBOX.>"],
    subscribeDeny: [`${vehicleInbox("*")}.>`],
  };
}

// An edge leaf node's connection to the hub (the server reads a leaf's permissions from the
// leaf's side: publish is what it sends into the hub). Samples and status come only through the
// hub stream's source, never over the connection, either way (nats-leaf.conf denies them too);
// the rest passes: the source's deliveries and heartbeats, JetStream API replies of the edge's
// domain, commands to the edge's vehicles and their replies.
function leafPermissions({ partitionPrefix }) {
  return {
    publishDeny: ["vehicle.*.*", `${partitionPrefix}.>`],
    subscribeDeny: ["vehicle.*.*"],
  };
}

function leafEntry(name, nkey, perms) {
  return [
    `    # edge leaf node ${name}`,
    `    { nkey: ${nkey}`,
    `      permissions: {`,
    `        publish: { deny: ${list(perms.publishDeny)} }`,
    `        subscribe: { deny: ${list(perms.subscribeDeny)} }`,
    "      } }",
  ].join("\n");
}

function userEntry(comment, nkey, perms, allowResponses) {
  const deny = perms.subscribeDeny ? `, deny: ${list(perms.subscribeDeny)}` : "";
  const lines = [
    `    # ${comment}`,
    `    { nkey: ${nkey}`,
    `      permissions: {`,
    `        publish: { allow: ${list(perms.publish)} }`,
    `        subscribe: { allow: ${list(perms.subscribe)}${deny} }`,
  ];
  if (allowResponses) lines.push("        allow_responses: { max: 1, expires: \"10s\" }");
  lines.push("      } }");
  return lines.join("\n");
}

const a = parseArgs(process.argv.slice(2));
const seedDir = path.join(a.out, "seeds");
fs.mkdirSync(seedDir, { recursive: true, mode: 0o700 });
const entries = [
  userEntry("engine: fleetflow workers", userKey(seedDir, "engine"), enginePermissions(a), false),
  userEntry("ops: fleetctl", userKey(seedDir, "ops"), opsPermissions(), false),
];
for (const id of a.vehicleIds) {
  // allow_responses: a vehicle answers each fleetctl request once, on its reply subject.
  entries.push(userEntry(`vehicle ${id}`, userKey(seedDir, `vehicle-${id}`), vehiclePermissions(id, a), true));
}
for (const name of a.leafNames) {
  entries.push(leafEntry(name, userKey(seedDir, `leaf-${name}`), leafPermissions(a)));
}
const leaves = a.leafNames.length > 0 ? `, ${a.leafNames.length} edge leaf nodes` : "";
const conf = `# Generated by deploy/nats/generate-users.mjs: ${a.vehicleIds.length} vehicles, engine, ops${leaves}.
# Public keys and permissions only; the seeds are in seeds/ (secret).
users = [
${entries.join("\n")}
]
`;
fs.writeFileSync(path.join(a.out, "fleet-users.conf"), conf);
console.log(`generate-users.mjs: wrote ${path.join(a.out, "fleet-users.conf")} (${entries.length} users), seeds in ${seedDir}`);
