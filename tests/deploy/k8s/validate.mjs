// Renders every kustomization under deploy/k8s (the base and each overlay) with `kubectl
// kustomize`, validates each rendered object against the Kubernetes API schemas
// (kubernetes-models) and the KEDA CRD schemas (@kubernetes-models/keda), and checks what the
// schemas cannot: that the objects fit together and fit the engine (pipeline, ports, probes,
// drain time, no replica count but KEDA's, the partition consumers whose summed lag KEDA watches,
// the NATS account and its partition mapping). A self-test first shows that these checks fail on
// broken copies of the base.
//
// usage: node validate.mjs --repo DIR --node-modules DIR --fleetflow BIN [--kubectl BIN]
// Exit status: 0 all checks pass, 1 a check failed, 77 a tool is missing (ctest: skipped).
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createRequire } from "node:module";

function parseArgs(argv) {
  const args = { kubectl: "kubectl" };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "").replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    args[key] = argv[i + 1];
  }
  for (const required of ["repo", "nodeModules", "fleetflow"]) {
    if (!args[required]) {
      console.error(`validate.mjs: missing --${required}`);
      process.exit(2);
    }
  }
  return args;
}

const args = parseArgs(process.argv.slice(2));
const require = createRequire(path.join(path.resolve(args.nodeModules), "..", "package.json"));
const YAML = require("yaml");
const k8sDir = path.join(args.repo, "deploy", "k8s");

let failures = 0;
let checks = 0;
function check(ok, what) {
  checks++;
  if (!ok) {
    failures++;
    console.log(`not ok - ${what}`);
  }
  return ok;
}

function findKubectl() {
  try {
    execFileSync(args.kubectl, ["version", "--client"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/// The model class of an object: kubernetes-models for the built-in API groups,
/// @kubernetes-models/keda for keda.sh. Throws when the apiVersion/kind is unknown.
function modelClass(obj) {
  const [group, version] = obj.apiVersion.includes("/")
    ? obj.apiVersion.split("/")
    : ["", obj.apiVersion];
  const module =
    group === "keda.sh"
      ? `@kubernetes-models/keda/keda.sh/${version}`
      : `kubernetes-models/${group ? `${group}/` : ""}${version}`;
  const exports = require(module);
  if (!exports[obj.kind]) throw new Error(`no schema for ${obj.apiVersion} ${obj.kind}`);
  return exports[obj.kind];
}

function validateSchema(obj) {
  const Model = modelClass(obj);
  new Model(obj).validate();
}

function kustomizations() {
  const dirs = [];
  const walk = (dir) => {
    if (fs.existsSync(path.join(dir, "kustomization.yaml"))) dirs.push(dir);
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      if (e.isDirectory()) walk(path.join(dir, e.name));
    }
  };
  walk(k8sDir);
  return dirs.sort();
}

function render(dir) {
  const out = execFileSync(args.kubectl, ["kustomize", dir], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  });
  return YAML.parseAllDocuments(out)
    .map((d) => d.toJS())
    .filter((d) => d);
}

// The copy in deploy/k8s/base differs from pipelines/jetstream.json only in its "$schema" path,
// relative to where each file lies (for editors; the engine ignores it).
const withoutSchemaPath = (text) => text.replace(/^(\s*"\$schema"\s*:\s*)"[^"]*"/m, '$1""');
const pipelineText = fs.readFileSync(path.join(args.repo, "pipelines", "jetstream.json"), "utf8");
const natsConf = fs.readFileSync(path.join(args.repo, "deploy", "nats", "nats-server.conf"), "utf8");
const deployDoc = fs.readFileSync(path.join(args.repo, "docs", "deploy.md"), "utf8");
const validatedPipelines = new Set();

function subset(small, big) {
  return Object.entries(small || {}).every(([k, v]) => big && big[k] === v);
}

/// Checks a rendered kustomization beyond the schemas.
function checkCoherence(name, objs, ck = check) {
  const byKind = (kind) => objs.filter((o) => o.kind === kind);
  const allowed = new Set(["Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "ScaledObject"]);
  for (const o of objs) ck(allowed.has(o.kind), `${name}: unexpected kind ${o.kind}`);
  const [deployment] = byKind("Deployment");
  const [scaled] = byKind("ScaledObject");
  const [pdb] = byKind("PodDisruptionBudget");
  const [service] = byKind("Service");
  for (const [kind, o] of [["Deployment", deployment], ["ScaledObject", scaled],
    ["PodDisruptionBudget", pdb], ["Service", service]]) {
    ck(o && byKind(kind).length === 1, `${name}: exactly one ${kind}`);
  }
  if (!deployment || !scaled || !pdb || !service) return;

  const namespaces = new Set(objs.map((o) => o.metadata.namespace));
  ck(namespaces.size === 1, `${name}: every object in one namespace (${[...namespaces]})`);

  const pod = deployment.spec.template;
  const labels = pod.metadata.labels;
  ck(subset(deployment.spec.selector.matchLabels, labels), `${name}: Deployment selector matches its pods`);
  ck(subset(pdb.spec.selector.matchLabels, labels), `${name}: PodDisruptionBudget selects the engine pods`);
  // Workers are unready while PostgreSQL or NATS is down: such pods must stay evictable, or a
  // database outage blocks every node drain.
  ck(pdb.spec.unhealthyPodEvictionPolicy === "AlwaysAllow",
     `${name}: PodDisruptionBudget lets unready workers be evicted (unhealthyPodEvictionPolicy: AlwaysAllow)`);
  ck(subset(service.spec.selector, labels), `${name}: Service selects the engine pods`);

  // ConfigMaps and Secrets the pods use.
  const configMaps = new Map(byKind("ConfigMap").map((c) => [c.metadata.name, c]));
  const externalSecrets = ["fleetflow-nats", "fleetflow-postgres", "fleetflow-postgres-password"];
  const spec = pod.spec;
  const [engine] = spec.containers;
  const cmRefs = [
    ...spec.volumes.filter((v) => v.configMap).map((v) => v.configMap.name),
    ...(engine.envFrom || []).filter((e) => e.configMapRef).map((e) => e.configMapRef.name),
  ];
  for (const ref of cmRefs) ck(configMaps.has(ref), `${name}: ConfigMap ${ref} is rendered`);
  const secretRefs = [
    ...spec.volumes.filter((v) => v.secret).map((v) => v.secret.secretName),
    ...(engine.envFrom || []).filter((e) => e.secretRef).map((e) => e.secretRef.name),
  ];
  for (const ref of secretRefs) {
    ck(externalSecrets.includes(ref) && deployDoc.includes(ref),
      `${name}: Secret ${ref} is one of ${externalSecrets} and docs/deploy.md says how to create it`);
  }
  for (const s of externalSecrets) ck(secretRefs.includes(s), `${name}: the pods use Secret ${s}`);

  // The pipeline: mounted where `run` reads it, identical to pipelines/jetstream.json (but for the
  // "$schema" path), valid.
  const mountOf = (volumeName) => engine.volumeMounts.find((m) => m.name === volumeName);
  let deployed;  // the pipeline the pods run
  const pipelineVolume = spec.volumes.find((v) => v.configMap && configMaps.get(v.configMap.name)?.data?.["pipeline.json"]);
  if (ck(pipelineVolume, `${name}: a volume holds the pipeline ConfigMap`)) {
    const text = configMaps.get(pipelineVolume.configMap.name).data["pipeline.json"];
    ck(withoutSchemaPath(text) === withoutSchemaPath(pipelineText),
      `${name}: the ConfigMap pipeline is identical to pipelines/jetstream.json (but for the "$schema" path)`);
    try {
      deployed = JSON.parse(text);
    } catch (e) {
      ck(false, `${name}: the ConfigMap pipeline is JSON: ${e.message}`);
    }
    const mount = mountOf(pipelineVolume.name);
    const runAt = engine.args.indexOf("run");
    ck(mount && runAt >= 0 && engine.args[runAt + 1] === `${mount.mountPath}/pipeline.json`,
      `${name}: the engine runs the mounted pipeline (${engine.args.join(" ")})`);
    if (!validatedPipelines.has(text)) {
      validatedPipelines.add(text);
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "fleetflow-k8s-"));
      const file = path.join(dir, "pipeline.json");
      fs.writeFileSync(file, text);
      try {
        const out = execFileSync(args.fleetflow, ["validate", file], { encoding: "utf8", stdio: "pipe" });
        ck(/ok: pipeline/.test(out), `${name}: fleetflow validate accepts the ConfigMap pipeline`);
      } catch (e) {
        ck(false, `${name}: fleetflow validate rejects the ConfigMap pipeline: ${e.stdout}${e.stderr}`);
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    }
  }

  // Connections from the environment, secrets as mounted files only.
  const env = {};
  for (const ref of engine.envFrom || []) {
    if (ref.configMapRef) Object.assign(env, configMaps.get(ref.configMapRef.name)?.data);
  }
  for (const e of engine.env || []) env[e.name] = e.value;
  ck(/^(nats|tls):\/\//.test(env.NATS_URL || ""), `${name}: NATS_URL is set (${env.NATS_URL})`);
  const natsMount = mountOf(spec.volumes.find((v) => v.secret?.secretName === "fleetflow-nats")?.name);
  const credential = env.NATS_NKEY_SEED || env.NATS_CREDS;
  ck(natsMount && credential && credential.startsWith(`${natsMount.mountPath}/`),
    `${name}: the NATS credential file lies in the mounted fleetflow-nats Secret`);
  if (env.NATS_CA) {
    ck(natsMount && env.NATS_CA.startsWith(`${natsMount.mountPath}/`), `${name}: NATS_CA lies in the mounted Secret`);
  }
  for (const [k, v] of Object.entries(env)) {
    ck(!/PASSWORD|SEED_VALUE|SECRET/.test(k) || !v, `${name}: no secret value in the ConfigMap (${k})`);
  }
  // The PostgreSQL password is a file (PGPASSFILE), never an environment variable: libpq takes
  // it only when private (0600), so the Secret's item is 0600 and copied, 0600, by an init
  // container into a volume the engine mounts.
  check(!("PGPASSWORD" in env), `${name}: no PGPASSWORD in the engine's environment`);
  const pgpassMount = engine.volumeMounts.find((m) => env.PGPASSFILE && env.PGPASSFILE.startsWith(`${m.mountPath}/`));
  check(pgpassMount, `${name}: PGPASSFILE (${env.PGPASSFILE}) lies in a volume the engine mounts`);
  const pgSecretVolume = spec.volumes.find((v) => v.secret?.secretName === "fleetflow-postgres-password" && (v.secret.items || []).some((i) => i.key === "pgpass"));
  check(pgSecretVolume && pgSecretVolume.secret.defaultMode === 0o600,
    `${name}: the Secret fleetflow-postgres-password's pgpass is mounted with defaultMode 0600`);
  // A Secret taken whole as environment (envFrom) gives every key as a variable, pgpass too.
  const envSecrets = [...(engine.envFrom || []), ...(spec.initContainers || []).flatMap((c) => c.envFrom || [])]
    .map((ref) => ref.secretRef?.name).filter(Boolean);
  check(!envSecrets.includes(pgSecretVolume?.secret.secretName),
    `${name}: the Secret holding pgpass is not given as environment (envFrom: ${envSecrets.join(", ")})`);
  const init = (spec.initContainers || []).find((c) => (c.volumeMounts || []).some((m) => m.name === pgSecretVolume?.name));
  if (check(init, `${name}: an init container reads the pgpass Secret`)) {
    const cmd = (init.command || []).join(" ");
    check(/install -m 0600 /.test(cmd) && pgpassMount && cmd.endsWith(env.PGPASSFILE),
      `${name}: the init container installs the pgpass as PGPASSFILE with mode 0600 (${cmd})`);
    check(init.volumeMounts.some((m) => m.name === pgpassMount?.name),
      `${name}: the init container writes the volume the engine reads PGPASSFILE from`);
  }

  // HTTP endpoints, probes, resources, termination.
  const portArg = engine.args[engine.args.indexOf("--metrics-port") + 1];
  const metricsPort = engine.ports.find((p) => p.name === "metrics");
  ck(metricsPort && String(metricsPort.containerPort) === portArg,
    `${name}: the metrics containerPort is the engine's --metrics-port`);
  const probePath = (p) => p?.httpGet && p.httpGet.port === "metrics" ? p.httpGet.path : undefined;
  ck(probePath(engine.livenessProbe) === "/healthz", `${name}: liveness probe on /healthz`);
  ck(probePath(engine.readinessProbe) === "/readyz", `${name}: readiness probe on /readyz`);
  ck(engine.resources?.requests?.cpu && engine.resources?.requests?.memory &&
    engine.resources?.limits?.memory, `${name}: resource requests and a memory limit`);
  ck(spec.securityContext?.runAsNonRoot === true, `${name}: pods run as non-root`);
  if (!ck(deployed, `${name}: the pipeline the pods run is known`)) return;
  ck(!("replicas" in deployment.spec),
    `${name}: the Deployment sets no replicas (KEDA owns the count; kubectl apply would reset it)`);
  const sink = deployed.nodes.find((n) => n.type === "timescale_sink");
  const drainS = (sink.config.drain_timeout_ms ?? 30000) / 1000;
  ck(spec.terminationGracePeriodSeconds >= drainS + 15,
    `${name}: terminationGracePeriodSeconds (${spec.terminationGracePeriodSeconds}) leaves the sink's drain (${drainS} s) time to finish`);

  // KEDA: the summed lag of the consumers the workers read, in the account of the engine user.
  ck(scaled.spec.scaleTargetRef.name === deployment.metadata.name &&
    (scaled.spec.scaleTargetRef.kind ?? "Deployment") === "Deployment",
    `${name}: the ScaledObject scales the engine Deployment`);
  ck(scaled.spec.minReplicaCount >= 1 && scaled.spec.maxReplicaCount >= scaled.spec.minReplicaCount,
    `${name}: 1 <= minReplicaCount <= maxReplicaCount`);
  const source = deployed.nodes.find((n) => n.type === "nats_source" && n.config.delivery === "jetstream");
  if (!ck(source, `${name}: the pipeline reads a JetStream stream`)) return;
  const stream = source.config.stream ?? "TELEMETRY";
  const durable = source.config.durable ?? "fleetflow";
  const partitions = source.config.partitions ?? 0;
  const consumers = partitions > 0
    ? Array.from({ length: partitions }, (_, n) => `${durable}-${n}`)
    : [durable];
  const triggers = scaled.spec.triggers;
  ck(triggers.every((t) => t.type === "nats-jetstream"), `${name}: every trigger is nats-jetstream`);
  ck(triggers.length === consumers.length,
    `${name}: one trigger per consumer (${triggers.length} triggers, ${consumers.length} consumers)`);
  const watched = triggers.map((t) => t.metadata?.consumer).sort();
  ck(JSON.stringify(watched) === JSON.stringify([...consumers].sort()),
    `${name}: the triggers watch exactly the consumers ${consumers[0]} ... ${consumers.at(-1)} (${watched})`);
  for (const t of triggers) {
    const m = t.metadata || {};
    for (const key of ["natsServerMonitoringEndpoint", "account", "stream", "consumer"]) {
      ck(m[key], `${name}: trigger ${t.name} sets ${key}`);
    }
    ck(m.stream === stream, `${name}: trigger ${t.name} watches the pipeline's stream ${stream} (${m.stream})`);
    ck(m.natsServerMonitoringEndpoint === triggers[0].metadata?.natsServerMonitoringEndpoint &&
      m.account === triggers[0].metadata?.account, `${name}: trigger ${t.name} reads the same server and account`);
  }
  const account = triggers[0]?.metadata?.account;
  ck(account && new RegExp(`^\\s*${account}\\s*[:=]?\\s*\\{`, "m").test(natsConf),
    `${name}: account ${account} is defined in deploy/nats/nats-server.conf`);
  if (partitions > 0) {
    ck(scaled.spec.maxReplicaCount <= partitions,
      `${name}: maxReplicaCount (${scaled.spec.maxReplicaCount}) <= partitions (${partitions})`);
    // Several triggers give the HPA the largest of their replica counts; only a formula adds
    // them up. Each trigger's name must appear in it exactly once, joined by +.
    const mod = scaled.spec.advanced?.scalingModifiers;
    if (ck(mod, `${name}: scalingModifiers sum the triggers`)) {
      const names = triggers.map((t) => t.name);
      ck(names.every((n) => /^[A-Za-z_][A-Za-z0-9_]*$/.test(n ?? "")) && new Set(names).size === names.length,
        `${name}: every trigger has a distinct name usable in a formula`);
      const terms = String(mod.formula ?? "").split("+").map((x) => x.trim());
      ck(JSON.stringify([...terms].sort()) === JSON.stringify([...names].sort()),
        `${name}: the formula is the sum of every trigger, each once (${mod.formula})`);
      ck(/^[1-9][0-9]*$/.test(String(mod.target)), `${name}: scalingModifiers.target is a positive number (${mod.target})`);
      ck((mod.metricType ?? "AverageValue") === "AverageValue",
        `${name}: the summed lag is divided by the target per worker (AverageValue)`);
    }
  }
}

function selfTest() {
  // The schemas must be able to fail, or the checks above prove nothing.
  const bad = [
    { apiVersion: "apps/v1", kind: "Deployment", metadata: { name: "x" }, spec: { replicas: "two", selector: {}, template: {} } },
    { apiVersion: "keda.sh/v1alpha1", kind: "ScaledObject", metadata: { name: "x" }, spec: { scaleTargetRef: { name: "x" }, triggers: [{ type: "nats-jetstream", metadata: { lagThreshold: 5 } }] } },
    { apiVersion: "policy/v1", kind: "PodDisruptionBudget", metadata: { name: "x" }, spec: { maxUnavailable: { n: 1 } } },
  ];
  for (const obj of bad) {
    let rejected = false;
    try {
      validateSchema(obj);
    } catch {
      rejected = true;
    }
    check(rejected, `self-test: an invalid ${obj.kind} is rejected by its schema`);
  }
}

/// The account's mapping in nats-server.conf puts vehicle.<id>.<sensor> into as many partitions,
/// under the same prefix, as the deployed pipeline reads; docs/deploy.md shows that very line.
function checkMapping() {
  const deployed = JSON.parse(fs.readFileSync(path.join(k8sDir, "base", "pipeline.json"), "utf8"));
  const source = deployed.nodes.find((n) => n.type === "nats_source");
  const partitions = source?.config.partitions ?? 0;
  const prefix = source?.config.partition_prefix ?? "telemetry";
  const mappings = [...natsConf.matchAll(/^\s*"vehicle\.\*\.\*"\s*:\s*"([^"]*)"/gm)].map((m) => m[1]);
  if (partitions === 0) {
    check(mappings.length === 0, "nats-server.conf maps no vehicle subjects (unpartitioned pipeline)");
    return;
  }
  const want = `${prefix}.{{partition(${partitions},1)}}.{{wildcard(1)}}.{{wildcard(2)}}`;
  check(mappings.length === 1 && mappings[0] === want,
    `nats-server.conf maps "vehicle.*.*" to "${want}" (the pipeline's ${partitions} partitions): ${mappings}`);
  check(deployDoc.includes(`"vehicle.*.*": "${want}"`), "docs/deploy.md shows the mapping line");
}

/// The checks beyond the schemas must fail on broken manifests too: each broken copy of the
/// base must make at least one check matching `expect` fail.
function selfTestCoherence(objs) {
  const broken = [
    ["a Deployment with replicas", /sets no replicas/, (o) => {
      o.find((x) => x.kind === "Deployment").spec.replicas = 1;
    }],
    ["a partition without a trigger", /one trigger per consumer/, (o) => {
      o.find((x) => x.kind === "ScaledObject").spec.triggers.pop();
    }],
    ["two triggers on one consumer", /watch exactly the consumers/, (o) => {
      const t = o.find((x) => x.kind === "ScaledObject").spec.triggers;
      t[1].metadata.consumer = t[0].metadata.consumer;
    }],
    ["a formula without a term", /sum of every trigger/, (o) => {
      const m = o.find((x) => x.kind === "ScaledObject").spec.advanced.scalingModifiers;
      m.formula = m.formula.replace(/ \+ [^ ]+$/, "");
    }],
    ["no scalingModifiers (max, not sum)", /scalingModifiers sum/, (o) => {
      delete o.find((x) => x.kind === "ScaledObject").spec.advanced.scalingModifiers;
    }],
    ["more workers than partitions", /maxReplicaCount \(17\)/, (o) => {
      o.find((x) => x.kind === "ScaledObject").spec.maxReplicaCount = 17;
    }],
  ];
  for (const [what, expect, breakIt] of broken) {
    const copy = structuredClone(objs);
    breakIt(copy);
    const failed = [];
    checkCoherence("self-test", copy, (ok, message) => {
      if (!ok) failed.push(message);
      return ok;
    });
    check(failed.some((m) => expect.test(m)), `self-test: ${what} is caught (${failed.join("; ") || "nothing failed"})`);
  }
}

if (!findKubectl()) {
  console.log(`SKIPPED: ${args.kubectl} not found (scripts/deps.sh installs kubernetes-client)`);
  process.exit(77);
}
selfTest();
selfTestCoherence(render(path.join(k8sDir, "base")));
checkMapping();
let rendered = 0;
for (const dir of kustomizations()) {
  const name = path.relative(k8sDir, dir);
  let objs;
  try {
    objs = render(dir);
  } catch (e) {
    check(false, `${name}: kubectl kustomize failed: ${e.stderr || e.message}`);
    continue;
  }
  rendered++;
  for (const obj of objs) {
    const id = `${name}: ${obj.kind}/${obj.metadata?.name}`;
    try {
      validateSchema(obj);
      check(true, id);
    } catch (e) {
      check(false, `${id}: ${e.message}`);
    }
  }
  checkCoherence(name, objs);
  console.log(`${name}: ${objs.length} objects (${objs.map((o) => o.kind).join(", ")})`);
}
check(rendered >= 3, `the base and at least two overlays render (${rendered})`);
console.log(`${checks - failures}/${checks} checks passed`);
process.exit(failures === 0 ? 0 : 1);
