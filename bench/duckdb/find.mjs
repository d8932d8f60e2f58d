// ff-bench-find's contender: `fleetflow find --archive`'s question asked of DuckDB over the same
// files. Which vehicles had a gps sample in a lat/lon rectangle during [from, to): one line per
// vehicle with its first and last time inside (milliseconds, as find prints them) and its samples
// inside, in find's CSV format. DuckDB prunes what its SQL can say: the day and hour folders of the
// period (hive partitioning) and, with --cells, the cell folders that meet the rectangle; the
// rectangle itself is `lat BETWEEN … AND lon BETWEEN …` (bounds included, as find's area).
//
// usage: node find.mjs --root DIR --from T1 --to T2 --min-lat A --max-lat B --min-lon C --max-lon D
//          [--cells u09tq,u09tr,…] [--sensor gps] [--out FILE] [--explain]
// The answer goes to --out (else stdout); one line `duckdb: {"query_s": …, "cpu_s": …, …}` to
// stderr with the query's wall and CPU time (the process's, all DuckDB threads).
//
// Installed by `npm ci` into the build tree (target ff-bench-find-node) beside node_modules.

import fs from "node:fs";
import { DuckDBInstance } from "@duckdb/node-api";

function parseArgs(argv) {
  const args = { sensor: "gps", cells: "", out: "", explain: false };
  for (let i = 0; i < argv.length; ++i) {
    const name = argv[i].replace(/^--/, "").replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (name === "explain") {
      args.explain = true;
      continue;
    }
    if (i + 1 >= argv.length) throw new Error(`${argv[i]} needs a value`);
    args[name] = argv[++i];
  }
  for (const required of ["root", "from", "to", "minLat", "maxLat", "minLon", "maxLon"]) {
    if (args[required] === undefined) throw new Error(`--${required} is required`);
  }
  for (const n of ["minLat", "maxLat", "minLon", "maxLon"]) {
    if (!/^-?[0-9]+(\.[0-9]+)?$/.test(args[n])) throw new Error(`--${n} is not a number`);
  }
  if (!/^[A-Za-z0-9_-]+$/.test(args.sensor)) throw new Error("--sensor is not a sensor name");
  return args;
}

const quote = (s) => `'${String(s).replaceAll("'", "''")}'`;
const pad = (n) => String(n).padStart(2, "0");

// The day and hour folders that may hold [from, to): within one day its hours, else its days.
function periodFilter(from, to) {
  const last = new Date(to.getTime() - 1);  // to is excluded (ms is fine for folders)
  const day = (d) => d.toISOString().slice(0, 10);
  if (day(from) === day(last)) {
    return `day = DATE ${quote(day(from))} AND hour BETWEEN ${quote(pad(from.getUTCHours()))} ` +
           `AND ${quote(pad(last.getUTCHours()))}`;
  }
  return `day BETWEEN DATE ${quote(day(from))} AND DATE ${quote(day(last))}`;
}

function csvField(s) {
  return /[",\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

const args = parseArgs(process.argv.slice(2));
const from = new Date(args.from), to = new Date(args.to);
if (isNaN(from) || isNaN(to) || to <= from) throw new Error("--from and --to: an RFC 3339 period");
const glob = `${args.root.replace(/\/+$/, "")}/sensor=${args.sensor}/**/*.csv.zst`;
const cells = args.cells ? args.cells.split(",").filter((c) => /^[0-9a-z]+$/.test(c)) : [];
const utcMs = (e) => `strftime(${e} AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%S.%gZ')`;
const sql = `
SELECT vehicle_id,
       ${utcMs("min(ts)")} AS first_inside,
       ${utcMs("max(ts)")} AS last_inside,
       count(*) AS samples_inside
FROM read_csv(${quote(glob)}, hive_partitioning = true, header = true,
              columns = {'vehicle_id': 'VARCHAR', 'ts': 'TIMESTAMPTZ',
                         'lat': 'DOUBLE', 'lon': 'DOUBLE'})
WHERE ${periodFilter(from, to)}${cells.length ? `\n  AND cell IN (${cells.map(quote).join(", ")})` : ""}
  AND ts >= TIMESTAMPTZ ${quote(from.toISOString())} AND ts < TIMESTAMPTZ ${quote(to.toISOString())}
  AND lat BETWEEN ${args.minLat}::DOUBLE AND ${args.maxLat}::DOUBLE
  AND lon BETWEEN ${args.minLon}::DOUBLE AND ${args.maxLon}::DOUBLE
GROUP BY vehicle_id
ORDER BY vehicle_id`;

const instance = await DuckDBInstance.create(":memory:");
const db = await instance.connect();
const threads = (await db.runAndReadAll("SELECT current_setting('threads')")).getRows()[0][0];
const cpu0 = process.cpuUsage();
const t0 = process.hrtime.bigint();
const result = await db.runAndReadAll(sql);
const rows = result.getRows();
const querySeconds = Number(process.hrtime.bigint() - t0) / 1e9;
const cpu = process.cpuUsage(cpu0);

let csv = "vehicle_id,first_inside,last_inside,samples_inside\n";
for (const [vehicle, first, last, samples] of rows) {
  csv += `${csvField(vehicle)},${first},${last},${samples}\n`;
}
if (args.out) {
  fs.writeFileSync(args.out, csv);
} else {
  process.stdout.write(csv);
}
if (args.explain) {
  const plan = await db.runAndReadAll(`EXPLAIN ANALYZE ${sql}`);
  process.stderr.write(plan.getRows()[0][1] + "\n");
}
process.stderr.write(`duckdb: ${JSON.stringify({
  query_s: querySeconds,
  cpu_s: (cpu.user + cpu.system) / 1e6,
  vehicles: rows.length,
  threads: Number(threads),
  version: (await db.runAndReadAll("SELECT version()")).getRows()[0][0],
  sql,
})}\n`);
db.closeSync();
instance.closeSync();
