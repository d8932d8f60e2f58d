// Renders every kustomization under deploy/k8s (the base and each overlay) and deploy/nats (the
// NATS cluster) with `kubectl kustomize`, validates each rendered object against the Kubernetes
// API schemas (kubernetes-models) and the KEDA CRD schemas (@kubernetes-models/keda), and checks
// what the schemas cannot: that the objects fit together and fit the engine (pipeline, ports,
// probes, drain time, no replica count but KEDA's, the partition consumers whose summed lag KEDA
// watches, the NATS account and its partition mapping) and that the NATS cluster fits its
// configuration files (routes, server names, the files it includes, ports, store, probes). A
// self-test first shows that these checks fail on broken copies of the base and of the cluster.
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
const deployDir = path.join(args.repo, "deploy");
const k8sDir = path.join(deployDir, "k8s");
const natsDir = path.join(deployDir, "nats");

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
  const dirs = [natsDir];
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

// How many replicas of the stream and of every bucket each kustomization's pipeline asks for: 1
// (pipelines/jetstream.json as it is) on a single nats-server, 3 on the three-node cluster of
// deploy/nats, which the local overlay renders and production runs. A new kustomization must say.
const pipelineReplicas = { "k8s/base": 1, "k8s/overlays/local": 3, "k8s/overlays/scaleway": 3 };

/// Why a deployed pipeline is not pipelines/jetstream.json with `replicas`, or null when it is:
/// identical but for the "$schema" path and, for more than one replica, nats_source's
/// stream_replicas and keyed_last_value's bucket_replicas, which must then be that number.
function pipelineDifference(text, replicas) {
  if (replicas === 1) {
    return withoutSchemaPath(text) === withoutSchemaPath(pipelineText)
      ? null : "not identical to pipelines/jetstream.json (but for the \"$schema\" path)";
  }
  let deployed;
  try {
    deployed = JSON.parse(text);
  } catch (e) {
    return `not JSON: ${e.message}`;
  }
  const want = JSON.parse(pipelineText);
  const fields = [["nats_source", "stream_replicas"], ["keyed_last_value", "bucket_replicas"]];
  for (const [type, field] of fields) {
    const nodes = deployed.nodes.filter((n) => n.type === type);
    if (nodes.length === 0) return `has no ${type}`;
    for (const n of nodes) {
      if (n.config?.[field] !== replicas) return `${type} '${n.id}': ${field} is ${n.config?.[field]}, not ${replicas}`;
      delete n.config[field];
    }
  }
  delete deployed.$schema;
  delete want.$schema;
  return JSON.stringify(deployed) === JSON.stringify(want)
    ? null : `differs from pipelines/jetstream.json in more than "$schema" and ${fields.map((f) => f[1]).join(", ")}`;
}

const natsConf = fs.readFileSync(path.join(args.repo, "deploy", "nats", "nats-server.conf"), "utf8");
const deployDoc = fs.readFileSync(path.join(args.repo, "docs", "deploy.md"), "utf8");
const validatedPipelines = new Set();

function subset(small, big) {
  return Object.entries(small || {}).every(([k, v]) => big && big[k] === v);
}

/// Checks a rendered kustomization's engine objects beyond the schemas: `replicas` is what its
/// pipeline must ask for, `nats` the client endpoints of the NATS cluster (checkNatsCluster).
function checkCoherence(name, objs, ck = check, { replicas = 1, nats } = {}) {
  const byKind = (kind) => objs.filter((o) => o.kind === kind);
  const allowed = new Set(["Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "ScaledObject", "NetworkPolicy"]);
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
  // "$schema" path and the replicas of its stream and buckets), valid.
  const mountOf = (volumeName) => engine.volumeMounts.find((m) => m.name === volumeName);
  let deployed;  // the pipeline the pods run
  const pipelineVolume = spec.volumes.find((v) => v.configMap && configMaps.get(v.configMap.name)?.data?.["pipeline.json"]);
  if (ck(pipelineVolume, `${name}: a volume holds the pipeline ConfigMap`)) {
    const text = configMaps.get(pipelineVolume.configMap.name).data["pipeline.json"];
    const difference = pipelineDifference(text, replicas);
    ck(!difference, `${name}: the ConfigMap pipeline is pipelines/jetstream.json with ${replicas} ` +
      `replica(s) of the stream and buckets${difference ? `: ${difference}` : ""}`);
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
  if (nats) {
    const urls = (env.NATS_URL || "").split(",");
    ck(urls.every((u) => u.replace(/^(nats|tls):\/\//, "") === `${nats.host}:${nats.clientPort}`),
      `${name}: NATS_URL names the NATS cluster's client Service ${nats.host}:${nats.clientPort} (${env.NATS_URL})`);
  }
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
  checkNetworkPolicy(name, byKind("NetworkPolicy"), labels, metricsPort, ck, nats);
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
    if (nats) {
      ck(m.natsServerMonitoringEndpoint === `${nats.host}:${nats.monitorPort}`,
        `${name}: trigger ${t.name} reads the NATS cluster's monitoring port ${nats.host}:${nats.monitorPort} (${m.natsServerMonitoringEndpoint})`);
    }
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

/// The NetworkPolicy of the engine pods (pod labels `labels`): it selects them, denies all but
/// what it allows both ways, lets in the metrics port from the namespace monitoring only, and
/// lets out NATS (the cluster's pods and client port, when `nats` knows them), PostgreSQL (5432)
/// and DNS (53, UDP and TCP, to kube-system) only.
function checkNetworkPolicy(name, policies, labels, metricsPort, ck, nats) {
  const [policy] = policies;
  if (!ck(policy && policies.length === 1, `${name}: exactly one NetworkPolicy`)) return;
  const spec = policy.spec;
  const selector = spec.podSelector?.matchLabels;
  ck(selector && Object.keys(selector).length > 0 && subset(selector, labels) &&
    !spec.podSelector.matchExpressions,
    `${name}: the NetworkPolicy selects the engine pods (${JSON.stringify(spec.podSelector)})`);
  const types = spec.policyTypes || [];
  ck(types.includes("Ingress") && types.includes("Egress"),
    `${name}: the NetworkPolicy restricts both ingress and egress (policyTypes ${types})`);
  const namespaceIs = (peer, ns) => peer.namespaceSelector?.matchLabels?.["kubernetes.io/metadata.name"] === ns &&
    !peer.namespaceSelector.matchExpressions && !peer.ipBlock;
  const portsOf = (rule) => (rule.ports || []).map((p) => `${p.port}/${p.protocol ?? "TCP"}`);

  // Ingress: the metrics port, from monitoring; a rule without `from` or `ports` lets in anyone
  // or any port.
  const ingress = spec.ingress || [];
  ck(ingress.length > 0, `${name}: the NetworkPolicy lets Prometheus in`);
  for (const [i, rule] of ingress.entries()) {
    ck((rule.from || []).length > 0 && rule.from.every((peer) => namespaceIs(peer, "monitoring")),
      `${name}: ingress rule ${i} comes from the namespace monitoring only (${JSON.stringify(rule.from)})`);
    const metrics = ["metrics/TCP", `${metricsPort?.containerPort}/TCP`];
    ck((rule.ports || []).length > 0 && portsOf(rule).every((p) => metrics.includes(p)),
      `${name}: ingress rule ${i} opens the metrics port only (${portsOf(rule)})`);
  }

  // Egress: every rule names its ports, and only NATS's, PostgreSQL's and DNS's.
  const egress = spec.egress || [];
  const natsPort = nats?.clientPort ?? 4222;
  const known = { nats: `${natsPort}/TCP`, pg: "5432/TCP", dnsUdp: "53/UDP", dnsTcp: "53/TCP" };
  for (const [i, rule] of egress.entries()) {
    ck((rule.ports || []).length > 0 && portsOf(rule).every((p) => Object.values(known).includes(p)),
      `${name}: egress rule ${i} opens only the ports of NATS, PostgreSQL and DNS (${portsOf(rule)})`);
    if (portsOf(rule).some((p) => p.startsWith("53/"))) {
      ck((rule.to || []).length > 0 && rule.to.every((peer) => namespaceIs(peer, "kube-system")),
        `${name}: egress rule ${i} (DNS) goes to kube-system only (${JSON.stringify(rule.to)})`);
    }
    if (portsOf(rule).includes(known.nats) && nats?.namespace) {
      ck((rule.to || []).length > 0 && rule.to.every((peer) => namespaceIs(peer, nats.namespace) &&
        subset(peer.podSelector?.matchLabels, nats.podLabels) && Object.keys(peer.podSelector?.matchLabels || {}).length > 0),
      `${name}: egress rule ${i} (NATS) goes to the NATS pods in the namespace ${nats.namespace} only (${JSON.stringify(rule.to)})`);
    }
  }
  const opened = new Set(egress.flatMap(portsOf));
  for (const [what, port] of Object.entries(known)) {
    ck(opened.has(port), `${name}: the NetworkPolicy lets the engine reach ${what} (${port})`);
  }
  ck(deployDoc.includes("NetworkPolicy"), `${name}: docs/deploy.md describes the NetworkPolicy`);
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

// The NATS cluster's configuration files (deploy/nats), as the servers read them.
const natsFile = (file) => path.join(natsDir, file);
/// A configuration file without its comments.
const confText = (file) => fs.readFileSync(natsFile(file), "utf8").replace(/#.*$/gm, "");
/// The files `file` includes, itself first, recursively: all in one directory (include paths
/// are relative to the including file). Those not in deploy/nats come from elsewhere (a Secret).
function confFiles(file, seen = []) {
  seen.push(file);
  if (!fs.existsSync(natsFile(file))) return seen;
  for (const m of confText(file).matchAll(/^\s*include\s+"?([^"\s]+)"?/gm)) {
    if (!seen.includes(m[1])) confFiles(m[1], seen);
  }
  return seen;
}
/// A size as nats-server reads it: k/m/g/t are powers of 1000, kb/mb/gb/tb (and ki, kib, ...)
/// powers of 1024.
function natsSize(text) {
  const m = /^(\d+)\s*([a-z]*)$/i.exec(String(text ?? "").trim());
  if (!m) return NaN;
  const units = { "": 1, k: 1e3, m: 1e6, g: 1e9, t: 1e12 };
  const unit = m[2].toLowerCase();
  const binary = /^([kmgt])(b|i|ib)$/.exec(unit);
  if (binary) return Number(m[1]) * 1024 ** ("kmgt".indexOf(binary[1]) + 1);
  return unit in units ? Number(m[1]) * units[unit] : NaN;
}
/// A Kubernetes quantity in bytes.
function quantity(text) {
  const m = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(String(text ?? ""));
  if (!m) return NaN;
  const units = { undefined: 1, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, k: 1e3, M: 1e6, G: 1e9, T: 1e12 };
  return Number(m[1]) * units[m[2]];
}

/// Checks the NATS cluster's objects of a rendered kustomization beyond the schemas: a
/// StatefulSet of 3 nats-servers 2.10 running deploy/nats/nats-cluster.conf, each named after its
/// pod, routed to the three pods' DNS names on the headless Service, with exactly the files the
/// configuration includes (from deploy/nats through the ConfigMap, the rest from Secrets the
/// operator creates), its store on a claimed volume as large as max_file_store, ready when
/// JetStream runs, and one pod at a time disrupted. Returns the client Service's host name, client
/// port and monitoring port (for NATS_URL and KEDA).
function checkNatsCluster(name, objs, ck = check) {
  const byKind = (kind) => objs.filter((o) => o.kind === kind);
  const allowed = new Set(["StatefulSet", "Service", "ConfigMap", "PodDisruptionBudget"]);
  for (const o of objs) ck(allowed.has(o.kind), `${name}: unexpected kind ${o.kind} beside the NATS StatefulSet`);
  const [sts] = byKind("StatefulSet");
  const [pdb] = byKind("PodDisruptionBudget");
  ck(byKind("StatefulSet").length === 1, `${name}: exactly one NATS StatefulSet`);
  if (!ck(pdb && byKind("PodDisruptionBudget").length === 1, `${name}: exactly one PodDisruptionBudget for NATS`)) return undefined;
  const ns = sts.metadata.namespace;
  ck(ns && objs.every((o) => o.metadata.namespace === ns), `${name}: every NATS object in the namespace ${ns}`);
  const replicas = sts.spec.replicas;
  ck(replicas === 3, `${name}: the NATS StatefulSet has 3 replicas (${replicas})`);
  const pod = sts.spec.template;
  const labels = pod.metadata.labels;
  ck(subset(sts.spec.selector.matchLabels, labels), `${name}: the NATS StatefulSet's selector matches its pods`);
  ck(subset(pdb.spec.selector?.matchLabels, labels), `${name}: the NATS PodDisruptionBudget selects the nats pods`);
  ck(pdb.spec.maxUnavailable === 1, `${name}: the NATS PodDisruptionBudget has maxUnavailable 1 (${pdb.spec.maxUnavailable})`);
  const spec = pod.spec;
  const [server] = spec.containers;
  if (!ck(spec.containers.length === 1, `${name}: one container in the nats pods`)) return undefined;
  ck(/^nats:2\.10\.\d+(-alpine)?$/.test(server.image), `${name}: the official nats image of a 2.10 tag (${server.image})`);
  ck(spec.securityContext?.runAsNonRoot === true, `${name}: nats pods run as non-root`);

  // The configuration the server runs, and every file it includes, in one projected directory.
  const argv = [...(server.command || []), ...(server.args || [])];
  const configAt = argv.findIndex((a) => a === "--config" || a === "-c");
  const configPath = configAt >= 0 ? argv[configAt + 1] : undefined;
  if (!ck(configPath && path.posix.basename(configPath) === "nats-cluster.conf",
    `${name}: the nats container runs --config .../nats-cluster.conf (${argv.join(" ")})`)) return undefined;
  const configDir = path.posix.dirname(configPath);
  const configMount = server.volumeMounts.find((m) => m.mountPath === configDir);
  const configVolume = spec.volumes.find((v) => v.name === configMount?.name);
  const projected = new Map();  // file name in configDir -> { configMap | secret, key }
  for (const src of configVolume?.projected?.sources || []) {
    const from = src.configMap ? { configMap: src.configMap.name } : src.secret ? { secret: src.secret.name } : {};
    const items = (src.configMap || src.secret)?.items;
    ck(items, `${name}: the projected ${JSON.stringify(from)} lists its items (the files are named by the configuration)`);
    for (const item of items || []) projected.set(item.path, { ...from, key: item.key });
  }
  if (!ck(projected.size > 0, `${name}: ${configDir} is a projected volume of ConfigMap and Secrets`)) return undefined;
  const configMaps = new Map(byKind("ConfigMap").map((c) => [c.metadata.name, c]));
  const files = confFiles(path.posix.basename(configPath));
  const inRepo = files.filter((f) => fs.existsSync(natsFile(f)));
  const usedConfigMaps = new Set();
  for (const file of files) {
    const src = projected.get(file);
    if (inRepo.includes(file)) {
      const cm = configMaps.get(src?.configMap);
      ck(cm && cm.data?.[src.key] === fs.readFileSync(natsFile(file), "utf8"),
        `${name}: ${configDir}/${file} is deploy/nats/${file}, from a rendered ConfigMap (${JSON.stringify(src)})`);
      if (cm) usedConfigMaps.add(cm);
    } else {
      ck(src?.secret, `${name}: ${configDir}/${file}, included by the configuration but not in deploy/nats, comes from a Secret (${JSON.stringify(src)})`);
    }
  }
  for (const secret of new Set([...projected.values()].map((src) => src.secret).filter(Boolean))) {
    ck(new RegExp(`create secret \\w+ ${secret}\\b`).test(deployDoc),
      `${name}: docs/deploy.md says how to create the Secret ${secret} (kubectl -n ${ns} create secret ... ${secret})`);
  }
  for (const cm of usedConfigMaps) {
    ck(JSON.stringify(Object.keys(cm.data || {}).sort()) === JSON.stringify([...inRepo].sort()),
      `${name}: ConfigMap ${cm.metadata.name} holds exactly the files of deploy/nats the configuration includes, ${inRepo.join(", ")} (${Object.keys(cm.data || {})})`);
  }

  // The environment the configuration reads.
  const env = new Map((server.env || []).map((e) => [e.name, e]));
  const value = (n) => env.get(n)?.value;
  const text = inRepo.map(confText).join("\n");
  for (const v of new Set([...text.matchAll(/\$([A-Za-z_][A-Za-z0-9_]*)/g)].map((m) => m[1]))) {
    ck(env.has(v), `${name}: the nats container sets ${v}, which the configuration reads`);
  }
  ck(env.get("NATS_SERVER_NAME")?.valueFrom?.fieldRef?.fieldPath === "metadata.name",
    `${name}: NATS_SERVER_NAME is the pod's name (valueFrom.fieldRef metadata.name)`);
  for (const v of ["NATS_TLS_CERT", "NATS_TLS_KEY"]) {
    const file = value(v)?.startsWith(`${configDir}/`) ? value(v).slice(configDir.length + 1) : undefined;
    ck(projected.get(file)?.secret, `${name}: ${v} (${value(v)}) is a file of a Secret in ${configDir}`);
  }
  const claims = sts.spec.volumeClaimTemplates || [];
  const storeClaim = claims.find((c) => {
    const m = server.volumeMounts.find((vm) => vm.name === c.metadata.name);
    return m && (value("NATS_STORE_DIR") === m.mountPath || value("NATS_STORE_DIR")?.startsWith(`${m.mountPath}/`));
  });
  ck(storeClaim, `${name}: NATS_STORE_DIR (${value("NATS_STORE_DIR")}) is on a volume claimed by the StatefulSet`);
  const maxFile = natsSize(/max_file_store\s*[:=]\s*([0-9]+\s*[A-Za-z]*)/.exec(text)?.[1]);
  const storage = quantity(storeClaim?.spec?.resources?.requests?.storage);
  ck(maxFile > 0 && storage >= maxFile,
    `${name}: the store's volume (${storeClaim?.spec?.resources?.requests?.storage}) holds max_file_store (${maxFile} bytes)`);
  const maxMemory = natsSize(/max_memory_store\s*[:=]\s*([0-9]+\s*[A-Za-z]*)/.exec(text)?.[1]);
  ck(server.resources?.requests?.cpu && server.resources?.requests?.memory &&
    quantity(server.resources?.limits?.memory) > maxMemory,
    `${name}: nats requests CPU and memory, and its memory limit exceeds max_memory_store (${maxMemory} bytes)`);

  // Ports: the configuration's, the container's, the Services'.
  const confPort = (re) => Number(re.exec(text)?.[1]);
  const clientPort = confPort(/^\s*port\s*[:=]\s*(\d+)/m);
  const httpPort = confPort(/^\s*http_port\s*[:=]\s*(\d+)/m);
  const routePort = confPort(/cluster\s*\{[^}]*?listen\s*[:=]\s*\S*?:(\d+)/s);
  const containerPort = (p) => typeof p === "number" ? p : server.ports?.find((cp) => cp.name === p)?.containerPort;
  for (const [what, p] of [["client", clientPort], ["route", routePort]]) {
    ck(p > 0 && server.ports?.some((cp) => cp.containerPort === p), `${name}: the nats container exposes the ${what} port ${p}`);
  }
  const services = byKind("Service").filter((svc) => subset(svc.spec.selector, labels) && Object.keys(svc.spec.selector || {}).length);
  const headless = services.find((svc) => svc.metadata.name === sts.spec.serviceName);
  ck(headless && headless.spec.clusterIP === "None",
    `${name}: the StatefulSet's serviceName ${sts.spec.serviceName} is a headless Service selecting the nats pods`);
  ck(headless?.spec.ports?.some((p) => p.port === routePort && containerPort(p.targetPort ?? p.port) === routePort),
    `${name}: the headless Service carries the route port ${routePort}`);
  ck(headless?.spec.publishNotReadyAddresses === true,
    `${name}: the headless Service publishes pods before they are ready (a node must reach the others to become ready)`);
  // The routes: nats-cluster.conf's $NATS_ROUTE_<i>, one per pod, each that pod's stable name.
  const routes = [.../routes\s*[:=]\s*\[([^\]]*)\]/s.exec(text)?.[1].matchAll(/\$([A-Za-z_][A-Za-z0-9_]*)/g) ?? []].map((m) => m[1]);
  ck(routes.length === replicas, `${name}: nats-cluster.conf has one route per replica (${routes.length} routes, ${replicas} replicas)`);
  routes.forEach((v, i) => {
    const want = `nats://${sts.metadata.name}-${i}.${sts.spec.serviceName}.${ns}.svc.cluster.local:${routePort}`;
    ck(value(v) === want, `${name}: ${v} is pod ${i}'s route ${want} (${value(v)})`);
  });
  // Clients and KEDA: a Service that is not headless, on the client and monitoring ports.
  const client = services.find((svc) => svc.spec.clusterIP !== "None" &&
    svc.spec.ports?.some((p) => containerPort(p.targetPort ?? p.port) === clientPort));
  const servicePort = (port) => client?.spec.ports?.find((p) => containerPort(p.targetPort ?? p.port) === port)?.port;
  ck(client, `${name}: a Service (not headless) carries the client port ${clientPort} to the nats pods`);
  ck(!httpPort || servicePort(httpPort), `${name}: the client Service carries the monitoring port ${httpPort} (KEDA)`);
  // Ready once JetStream runs: on /healthz?js-enabled-only=true of the monitoring port where the
  // configuration has one, else when the client port accepts connections.
  const ready = server.readinessProbe;
  ck(httpPort
    ? ready?.httpGet?.path === "/healthz?js-enabled-only=true" && containerPort(ready.httpGet.port) === httpPort
    : containerPort(ready?.tcpSocket?.port) === clientPort,
    `${name}: the nats readiness probe asks ${httpPort ? `/healthz?js-enabled-only=true on port ${httpPort}` : `port ${clientPort}`} (${JSON.stringify(ready)})`);
  return client && { host: `${client.metadata.name}.${ns}.svc.cluster.local`, clientPort: servicePort(clientPort),
    monitorPort: servicePort(httpPort), replicas, namespace: ns, podLabels: labels };
}

/// The cluster checks must fail on broken copies of deploy/nats too.
function selfTestNatsCluster(objs) {
  const sts = (o) => o.find((x) => x.kind === "StatefulSet");
  const envOf = (o, n) => sts(o).spec.template.spec.containers[0].env.find((e) => e.name === n);
  const broken = [
    ["2 replicas", /has 3 replicas/, (o) => { sts(o).spec.replicas = 2; }],
    ["a route to another Service's pod", /NATS_ROUTE_1 is pod 1's route/, (o) => {
      envOf(o, "NATS_ROUTE_1").value = envOf(o, "NATS_ROUTE_1").value.replace(`.${sts(o).spec.serviceName}.`, ".nats.");
    }],
    ["a route missing", /NATS_ROUTE_2/, (o) => {
      const env = sts(o).spec.template.spec.containers[0].env;
      env.splice(env.indexOf(envOf(o, "NATS_ROUTE_2")), 1);
    }],
    ["the client Service as serviceName", /serviceName nats is a headless Service|pod 0's route/, (o) => {
      sts(o).spec.serviceName = "nats";
    }],
    ["NATS_SERVER_NAME a literal", /NATS_SERVER_NAME is the pod's name/, (o) => {
      const e = envOf(o, "NATS_SERVER_NAME");
      delete e.valueFrom;
      e.value = "nats-0";
    }],
    ["maxUnavailable 2", /maxUnavailable 1/, (o) => {
      o.find((x) => x.kind === "PodDisruptionBudget").spec.maxUnavailable = 2;
    }],
    ["nats-server.conf not mounted", /nats-server.conf is deploy\/nats\/nats-server.conf/, (o) => {
      for (const src of sts(o).spec.template.spec.volumes.flatMap((v) => v.projected?.sources || [])) {
        if (src.configMap) src.configMap.items = src.configMap.items.filter((i) => i.path !== "nats-server.conf");
      }
    }],
    ["a file of deploy/nats changed in the ConfigMap", /nats-cluster.conf is deploy\/nats\/nats-cluster.conf/, (o) => {
      const cm = o.find((x) => x.kind === "ConfigMap");
      cm.data["nats-cluster.conf"] += "\nmax_payload: 8MB\n";
    }],
    ["an extra file in the ConfigMap", /holds exactly the files/, (o) => {
      o.find((x) => x.kind === "ConfigMap").data["fleet-users.conf"] = "users = []\n";
    }],
    ["readiness on the full /healthz", /readiness probe/, (o) => {
      sts(o).spec.template.spec.containers[0].readinessProbe.httpGet.path = "/healthz";
    }],
    ["nats 2.9", /2\.10 tag/, (o) => { sts(o).spec.template.spec.containers[0].image = "nats:2.9.25-alpine"; }],
    ["a store smaller than max_file_store", /holds max_file_store/, (o) => {
      sts(o).spec.volumeClaimTemplates[0].spec.resources.requests.storage = "10Gi";
    }],
  ];
  for (const [what, expect, breakIt] of broken) {
    const copy = structuredClone(objs);
    breakIt(copy);
    const failed = [];
    checkNatsCluster("self-test", copy, (ok, message) => {
      if (!ok) failed.push(message);
      return ok;
    });
    check(failed.some((m) => expect.test(m)), `self-test: ${what} is caught (${failed.join("; ") || "nothing failed"})`);
  }
}

/// The checks beyond the schemas must fail on broken manifests too: each broken copy of the
/// base must make at least one check matching `expect` fail.
function selfTestCoherence(objs, nats) {
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
    ["no NetworkPolicy", /exactly one NetworkPolicy/, (o) => {
      o.splice(o.findIndex((x) => x.kind === "NetworkPolicy"), 1);
    }],
    ["a NetworkPolicy of other pods", /selects the engine pods/, (o) => {
      o.find((x) => x.kind === "NetworkPolicy").spec.podSelector.matchLabels["app.kubernetes.io/component"] = "api";
    }],
    ["egress open to everything", /egress rule 3 opens only/, (o) => {
      o.find((x) => x.kind === "NetworkPolicy").spec.egress.push({});
    }],
    ["egress without a policy type", /both ingress and egress/, (o) => {
      o.find((x) => x.kind === "NetworkPolicy").spec.policyTypes = ["Ingress"];
    }],
    ["the metrics port open to every namespace", /from the namespace monitoring only/, (o) => {
      delete o.find((x) => x.kind === "NetworkPolicy").spec.ingress[0].from;
    }],
    ["another port let in", /opens the metrics port only/, (o) => {
      o.find((x) => x.kind === "NetworkPolicy").spec.ingress[0].ports.push({ port: 8080, protocol: "TCP" });
    }],
    ["NATS anywhere", /\(NATS\) goes to the NATS pods/, (o) => {
      delete o.find((x) => x.kind === "NetworkPolicy").spec.egress[0].to;
    }],
    ["no DNS", /reach dnsUdp/, (o) => {
      o.find((x) => x.kind === "NetworkPolicy").spec.egress.pop();
    }],
  ];
  for (const [what, expect, breakIt] of broken) {
    const copy = structuredClone(objs);
    breakIt(copy);
    const failed = [];
    checkCoherence("self-test", copy, (ok, message) => {
      if (!ok) failed.push(message);
      return ok;
    }, { replicas: 1, nats });
    check(failed.some((m) => expect.test(m)), `self-test: ${what} is caught (${failed.join("; ") || "nothing failed"})`);
  }
}

if (!findKubectl()) {
  console.log(`SKIPPED: ${args.kubectl} not found (scripts/deps.sh installs kubernetes-client)`);
  process.exit(77);
}
selfTest();
// deploy/nats on its own: the cluster every kustomization's engine connects to (the local overlay
// renders it too; production applies it apart).
const natsObjs = render(natsDir);
const natsEndpoints = checkNatsCluster("nats", natsObjs, (ok) => ok);
selfTestNatsCluster(natsObjs);
selfTestCoherence(render(path.join(k8sDir, "base")), natsEndpoints);
checkMapping();
let rendered = 0;
for (const dir of kustomizations()) {
  const name = path.relative(deployDir, dir);
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
  // The NATS cluster's objects are those in the namespace of a StatefulSet; the rest the engine's.
  const clusterNamespaces = new Set(objs.filter((o) => o.kind === "StatefulSet").map((o) => o.metadata.namespace));
  const cluster = objs.filter((o) => clusterNamespaces.has(o.metadata.namespace));
  const engine = objs.filter((o) => !clusterNamespaces.has(o.metadata.namespace));
  const nats = cluster.length > 0 ? checkNatsCluster(name, cluster) : natsEndpoints;
  check(cluster.length > 0 || engine.length > 0, `${name}: renders the engine or the NATS cluster`);
  if (engine.length > 0) {
    const replicas = pipelineReplicas[name];
    check(replicas, `${name}: pipelineReplicas in validate.mjs says how many replicas its pipeline asks for`);
    if (cluster.length > 0) {
      check(replicas === nats?.replicas,
        `${name}: the pipeline asks for as many replicas (${replicas}) as the NATS cluster it renders has nodes (${nats?.replicas})`);
    }
    checkCoherence(name, engine, check, { replicas: replicas ?? 1, nats });
  }
  console.log(`${name}: ${objs.length} objects (${objs.map((o) => o.kind).join(", ")})`);
}
check(rendered >= 4, `deploy/nats, the base and at least two overlays render (${rendered})`);
console.log(`${checks - failures}/${checks} checks passed`);
process.exit(failures === 0 ? 0 : 1);
