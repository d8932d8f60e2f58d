// Renders every kustomization under deploy/k8s (the base and each overlay) with `kubectl
// kustomize`, validates each rendered object against the Kubernetes API schemas
// (kubernetes-models) and the KEDA CRD schemas (@kubernetes-models/keda), and checks what the
// schemas cannot: that the objects fit together and fit the engine (pipeline, ports, probes,
// drain time, the JetStream stream and consumer KEDA watches, the NATS account).
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

const pipelineText = fs.readFileSync(path.join(args.repo, "pipelines", "jetstream.json"), "utf8");
const pipeline = JSON.parse(pipelineText);
const natsConf = fs.readFileSync(path.join(args.repo, "deploy", "nats", "nats-server.conf"), "utf8");
const deployDoc = fs.readFileSync(path.join(args.repo, "docs", "deploy.md"), "utf8");
const validatedPipelines = new Set();

function subset(small, big) {
  return Object.entries(small || {}).every(([k, v]) => big && big[k] === v);
}

/// Checks a rendered kustomization beyond the schemas.
function checkCoherence(name, objs) {
  const byKind = (kind) => objs.filter((o) => o.kind === kind);
  const allowed = new Set(["Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "ScaledObject"]);
  for (const o of objs) check(allowed.has(o.kind), `${name}: unexpected kind ${o.kind}`);
  const [deployment] = byKind("Deployment");
  const [scaled] = byKind("ScaledObject");
  const [pdb] = byKind("PodDisruptionBudget");
  const [service] = byKind("Service");
  for (const [kind, o] of [["Deployment", deployment], ["ScaledObject", scaled],
    ["PodDisruptionBudget", pdb], ["Service", service]]) {
    check(o && byKind(kind).length === 1, `${name}: exactly one ${kind}`);
  }
  if (!deployment || !scaled || !pdb || !service) return;

  const namespaces = new Set(objs.map((o) => o.metadata.namespace));
  check(namespaces.size === 1, `${name}: every object in one namespace (${[...namespaces]})`);

  const pod = deployment.spec.template;
  const labels = pod.metadata.labels;
  check(subset(deployment.spec.selector.matchLabels, labels), `${name}: Deployment selector matches its pods`);
  check(subset(pdb.spec.selector.matchLabels, labels), `${name}: PodDisruptionBudget selects the engine pods`);
  check(subset(service.spec.selector, labels), `${name}: Service selects the engine pods`);

  // ConfigMaps and Secrets the pods use.
  const configMaps = new Map(byKind("ConfigMap").map((c) => [c.metadata.name, c]));
  const externalSecrets = ["fleetflow-nats", "fleetflow-postgres"];
  const spec = pod.spec;
  const [engine] = spec.containers;
  const cmRefs = [
    ...spec.volumes.filter((v) => v.configMap).map((v) => v.configMap.name),
    ...(engine.envFrom || []).filter((e) => e.configMapRef).map((e) => e.configMapRef.name),
  ];
  for (const ref of cmRefs) check(configMaps.has(ref), `${name}: ConfigMap ${ref} is rendered`);
  const secretRefs = [
    ...spec.volumes.filter((v) => v.secret).map((v) => v.secret.secretName),
    ...(engine.envFrom || []).filter((e) => e.secretRef).map((e) => e.secretRef.name),
  ];
  for (const ref of secretRefs) {
    check(externalSecrets.includes(ref) && deployDoc.includes(ref),
      `${name}: Secret ${ref} is one of ${externalSecrets} and docs/deploy.md says how to create it`);
  }
  for (const s of externalSecrets) check(secretRefs.includes(s), `${name}: the pods use Secret ${s}`);

  // The pipeline: mounted where `run` reads it, identical to pipelines/jetstream.json, valid.
  const mountOf = (volumeName) => engine.volumeMounts.find((m) => m.name === volumeName);
  const pipelineVolume = spec.volumes.find((v) => v.configMap && configMaps.get(v.configMap.name)?.data?.["pipeline.json"]);
  if (check(pipelineVolume, `${name}: a volume holds the pipeline ConfigMap`)) {
    const text = configMaps.get(pipelineVolume.configMap.name).data["pipeline.json"];
    check(text === pipelineText, `${name}: the ConfigMap pipeline is identical to pipelines/jetstream.json`);
    const mount = mountOf(pipelineVolume.name);
    const runAt = engine.args.indexOf("run");
    check(mount && runAt >= 0 && engine.args[runAt + 1] === `${mount.mountPath}/pipeline.json`,
      `${name}: the engine runs the mounted pipeline (${engine.args.join(" ")})`);
    if (!validatedPipelines.has(text)) {
      validatedPipelines.add(text);
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "fleetflow-k8s-"));
      const file = path.join(dir, "pipeline.json");
      fs.writeFileSync(file, text);
      try {
        const out = execFileSync(args.fleetflow, ["validate", file], { encoding: "utf8", stdio: "pipe" });
        check(/ok: pipeline/.test(out), `${name}: fleetflow validate accepts the ConfigMap pipeline`);
      } catch (e) {
        check(false, `${name}: fleetflow validate rejects the ConfigMap pipeline: ${e.stdout}${e.stderr}`);
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
  check(/^(nats|tls):\/\//.test(env.NATS_URL || ""), `${name}: NATS_URL is set (${env.NATS_URL})`);
  const natsMount = mountOf(spec.volumes.find((v) => v.secret?.secretName === "fleetflow-nats")?.name);
  const credential = env.NATS_NKEY_SEED || env.NATS_CREDS;
  check(natsMount && credential && credential.startsWith(`${natsMount.mountPath}/`),
    `${name}: the NATS credential file lies in the mounted fleetflow-nats Secret`);
  if (env.NATS_CA) {
    check(natsMount && env.NATS_CA.startsWith(`${natsMount.mountPath}/`), `${name}: NATS_CA lies in the mounted Secret`);
  }
  for (const [k, v] of Object.entries(env)) {
    check(!/PASSWORD|SEED_VALUE|SECRET/.test(k) || !v, `${name}: no secret value in the ConfigMap (${k})`);
  }

  // HTTP endpoints, probes, resources, termination.
  const portArg = engine.args[engine.args.indexOf("--metrics-port") + 1];
  const metricsPort = engine.ports.find((p) => p.name === "metrics");
  check(metricsPort && String(metricsPort.containerPort) === portArg,
    `${name}: the metrics containerPort is the engine's --metrics-port`);
  const probePath = (p) => p?.httpGet && p.httpGet.port === "metrics" ? p.httpGet.path : undefined;
  check(probePath(engine.livenessProbe) === "/healthz", `${name}: liveness probe on /healthz`);
  check(probePath(engine.readinessProbe) === "/readyz", `${name}: readiness probe on /readyz`);
  check(engine.resources?.requests?.cpu && engine.resources?.requests?.memory &&
    engine.resources?.limits?.memory, `${name}: resource requests and a memory limit`);
  check(spec.securityContext?.runAsNonRoot === true, `${name}: pods run as non-root`);
  const sink = pipeline.nodes.find((n) => n.type === "timescale_sink");
  const drainS = (sink.config.drain_timeout_ms ?? 30000) / 1000;
  check(spec.terminationGracePeriodSeconds >= drainS + 15,
    `${name}: terminationGracePeriodSeconds (${spec.terminationGracePeriodSeconds}) leaves the sink's drain (${drainS} s) time to finish`);

  // KEDA: the consumer every worker binds, in the account of the engine user.
  check(scaled.spec.scaleTargetRef.name === deployment.metadata.name &&
    (scaled.spec.scaleTargetRef.kind ?? "Deployment") === "Deployment",
    `${name}: the ScaledObject scales the engine Deployment`);
  check(scaled.spec.minReplicaCount >= 1 && scaled.spec.maxReplicaCount >= scaled.spec.minReplicaCount,
    `${name}: 1 <= minReplicaCount <= maxReplicaCount`);
  const triggers = scaled.spec.triggers.filter((t) => t.type === "nats-jetstream");
  if (check(triggers.length === 1, `${name}: one nats-jetstream trigger`)) {
    const m = triggers[0].metadata;
    for (const key of ["natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold"]) {
      check(m[key], `${name}: nats-jetstream trigger sets ${key}`);
    }
    const source = pipeline.nodes.find((n) => n.type === "nats_source" && n.config.delivery === "jetstream");
    check(m.stream === source.config.stream, `${name}: trigger stream ${m.stream} is the pipeline's stream`);
    check(m.consumer === source.config.durable, `${name}: trigger consumer ${m.consumer} is the pipeline's durable`);
    check(Number(m.lagThreshold) > 0, `${name}: lagThreshold is a positive number`);
    check(new RegExp(`^\\s*${m.account}\\s*[:=]?\\s*\\{`, "m").test(natsConf),
      `${name}: account ${m.account} is defined in deploy/nats/nats-server.conf`);
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

if (!findKubectl()) {
  console.log(`SKIPPED: ${args.kubectl} not found (scripts/deps.sh installs kubernetes-client)`);
  process.exit(77);
}
selfTest();
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
