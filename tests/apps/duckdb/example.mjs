// The DuckDB example of docs/archive.md, run by tests/apps/archive_duckdb_test on an archive the
// archive and row_archive operators wrote: the three queries below, exactly as the documentation shows them (only the
// archive's directory, /var/lib/fleetflow/archive there, is the argument here).
//
// usage: node example.mjs ARCHIVE_ROOT
// Prints {"speed": [{ts, speed}, …], "gps_in_box": [{vehicle_id, samples, first_ts, last_ts}, …],
// "rows": [{ts, lat, lon, speed, soc}, …]}
// (times as DuckDB prints a TIMESTAMPTZ in UTC: 2026-11-28 10:00:00.25+00).
//
// DuckDB's Node API comes from bench/duckdb/package-lock.json, installed with `npm ci` beside this
// file in the build tree (the ctest fixture archive_duckdb_npm_ci).

import { DuckDBInstance } from "@duckdb/node-api";

const root = process.argv[2];
if (!root) {
  process.stderr.write("usage: node example.mjs ARCHIVE_ROOT\n");
  process.exit(2);
}
const archive = root.replace(/\/+$/, "");

// The speed of vehicle v00002 from 10:00 to 11:00 UTC on 2026-11-28, in time order: DuckDB reads
// only the chunks of folder sensor=speed/day=2026-11-28/hour=10.
const speed = `
SELECT ts, value AS speed
FROM read_csv('${archive}/sensor=speed/**/*.csv.zst', hive_partitioning = true)
WHERE day = '2026-11-28' AND hour = '10' AND vehicle_id = 'v00002'
ORDER BY ts`;

// The vehicles with gps samples in a box (bounds included) that hour: how many, the first and the
// last.
const gpsInBox = `
SELECT vehicle_id, count(*) AS samples, min(ts) AS first_ts, max(ts) AS last_ts
FROM read_csv('${archive}/sensor=gps/**/*.csv.zst', hive_partitioning = true)
WHERE day = '2026-11-28' AND hour = '10'
  AND lat BETWEEN 48.85 AND 48.87 AND lon BETWEEN 2.33 AND 2.36
GROUP BY vehicle_id
ORDER BY vehicle_id`;

// The 1 s rows of v00002 from 10:00 to 10:05 UTC that day (row_archive; an empty field is NULL).
const rows = `
SELECT ts, lat, lon, speed, soc
FROM read_csv('${archive}/rows=telemetry_1s/**/*.csv.zst', hive_partitioning = true)
WHERE day = '2026-11-28' AND hour = '10' AND vehicle_id = 'v00002'
  AND ts < TIMESTAMPTZ '2026-11-28 10:05:00+00'
ORDER BY ts`;

const instance = await DuckDBInstance.create(":memory:");
const db = await instance.connect();
await db.run("SET TimeZone = 'UTC'");
const answer = {};
for (const [name, sql] of [["speed", speed], ["gps_in_box", gpsInBox], ["rows", rows]]) {
  answer[name] = (await db.runAndReadAll(sql)).getRowObjectsJson();
}
process.stdout.write(JSON.stringify(answer) + "\n");
db.closeSync();
instance.closeSync();
