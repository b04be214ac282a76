"""Offline validation of the Kubernetes manifests (deploy/kubernetes/validate.sh runs it).

For the base and every overlay: render it with `kubectl kustomize` (the pinned kubectl's
embedded kustomize), check every object against the Kubernetes schemas in strict mode
(kubernetes-validate: an unknown field or a wrong type fails), the KEDA objects against models
generated from KEDA's CRDs (cloudcoil-models-keda, made to refuse unknown fields and coercions),
then what no schema can see: references between objects, probes against ports, the KEDA
triggers against the broker prefix, and the dispatcher's grace period against its delivery
timeout. One line per kustomization; any error names the object and the field, and the exit
status is 1.

Before that it checks itself: deliberately broken copies of rendered objects must be refused,
so that a validator accepting everything cannot pass unnoticed.
"""

from __future__ import annotations

import copy
import inspect
import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pydantic
import yaml
from cloudcoil import apimachinery
from cloudcoil.models.keda import v1alpha1 as keda

HERE = Path(__file__).resolve().parent
# The oldest Kubernetes the manifests are meant for, and the newest the schemas know.
K8S_VERSIONS = ("1.30.0", "1.37.0")
KUBECTL = Path(sys.executable).parent / "kubectl"

# What the services do on SIGTERM (crates/runtime/src/service.rs, crates/dispatcher/src/startup.rs
# and README "Operations"): the HTTP server drains for up to http.shutdown_timeout_seconds, then
# each background task gets the task grace: 10 s by default, the delivery timeout plus 5 s on
# the dispatcher.
DEFAULT_SHUTDOWN_TIMEOUT = 30
DEFAULT_TASK_GRACE = 10
DISPATCHER_RECORD_GRACE = 5
DEFAULT_DELIVERY_TIMEOUT = "15s"  # crates/runtime/src/config.rs, [delivery] timeout
SERVICE_PORTS = {"waybill-api": 8080, "waybill-ingest": 8081, "waybill-dispatcher": 8082}


class Problems:
    """Errors found in one kustomization, each naming the object and the field."""

    def __init__(self, where: str):
        self.where = where
        self.errors: list[str] = []

    def add(self, obj: dict | str, field: str, message: str) -> None:
        self.errors.append(f"{self.where}: {describe(obj)}: {field}: {message}")


def describe(obj: dict | str) -> str:
    if isinstance(obj, str):
        return obj
    return f"{obj.get('kind', '?')}/{(obj.get('metadata') or {}).get('name', '?')}"


# ---- KEDA's schema ----------------------------------------------------------------------------

def strict_keda_models() -> dict[str, type[pydantic.BaseModel]]:
    """The KEDA models, refusing unknown fields and values of the wrong type.

    The generated models accept and drop unknown fields (pydantic's default) and coerce "5" to
    5, where the API server refuses both; every model of the package and of the object metadata
    it uses is switched to `extra="forbid"` and strict validation, then rebuilt."""
    models = []
    for module in (apimachinery, keda):
        for value in vars(module).values():
            if (
                inspect.isclass(value)
                and issubclass(value, pydantic.BaseModel)
                and value.__module__ == module.__name__
            ):
                value.model_config["extra"] = "forbid"
                value.model_config["strict"] = True
                models.append(value)
    for model in models:
        model.model_rebuild(force=True)
    return {
        "ScaledObject": keda.ScaledObject,
        "ScaledJob": keda.ScaledJob,
        "TriggerAuthentication": keda.TriggerAuthentication,
        "ClusterTriggerAuthentication": keda.ClusterTriggerAuthentication,
    }


KEDA_MODELS = strict_keda_models()


def check_schema(obj: dict, problems: Problems) -> None:
    api_version = obj.get("apiVersion", "")
    if api_version.startswith("keda.sh/"):
        model = KEDA_MODELS.get(obj.get("kind", ""))
        if model is None or api_version != "keda.sh/v1alpha1":
            problems.add(obj, "kind", f"no KEDA schema for {api_version} {obj.get('kind')}")
            return
        try:
            model.model_validate(obj)
        except pydantic.ValidationError as e:
            for err in e.errors():
                field = ".".join(str(part) for part in err["loc"])
                problems.add(obj, field, f"{err['msg']} (KEDA CRD schema)")
        return
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            field = ".".join(str(part) for part in e.absolute_path) or "(object)"
            problems.add(obj, field, f"{e.message} (Kubernetes {e.version}, strict)")
            return
        except kubernetes_validate.SchemaNotFoundError as e:
            problems.add(obj, "kind", e.message)
            return


# ---- what schemas cannot see ------------------------------------------------------------------

def parse_duration(raw: str) -> float:
    """`250ms`, `15s`, `5m`, `1h`, `1d`, as the services write durations."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*", raw)
    if not m:
        raise ValueError(f"`{raw}` is not a duration such as 250ms, 15s, 5m or 1h")
    factor = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    return float(m.group(1)) * factor


def matches(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def binary(container: dict) -> str:
    """The Waybill service a container runs: its command, else the image's entrypoint."""
    command = container.get("command") or ["/usr/local/bin/waybill-api"]
    return Path(command[0]).name


def prestop_seconds(container: dict) -> float:
    pre = ((container.get("lifecycle") or {}).get("preStop")) or {}
    if "sleep" in pre:
        return float(pre["sleep"].get("seconds", 0))
    command = (pre.get("exec") or {}).get("command") or []
    if len(command) == 2 and command[0] in ("sleep", "/bin/sleep"):
        return float(command[1])
    return 0.0


def env_value(container: dict, name: str, config: dict) -> str | None:
    """A variable as the container sees it: its own `env`, else the ConfigMap it reads."""
    for var in container.get("env") or []:
        if var.get("name") == name:
            return var.get("value")
    return config.get(name)


def check_references(objects: list[dict], problems: Problems) -> dict:
    by_kind: dict[str, dict[str, dict]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
    deployments = by_kind.get("Deployment", {})
    configmaps = by_kind.get("ConfigMap", {})
    summary: dict = {"objects": len(objects)}

    config_map = configmaps.get("waybill-config")
    if config_map is None:
        problems.add("ConfigMap/waybill-config", "metadata.name", "missing")
        config: dict = {}
    else:
        config = config_map.get("data") or {}
    prefix = config.get("WAYBILL_BROKER__PREFIX", "waybill")
    summary["prefix"] = prefix
    queue_type = config.get("WAYBILL_BROKER__QUEUE_TYPE", "classic")
    summary["queue_type"] = queue_type
    if queue_type not in ("classic", "quorum"):
        problems.add(config_map or "ConfigMap/waybill-config", "data.WAYBILL_BROKER__QUEUE_TYPE",
                     f"`{queue_type}` is neither classic nor quorum")
    for key in config:
        if not (key.startswith("WAYBILL_") or key.startswith("OTEL_")):
            problems.add(config_map, f"data.{key}", "not a WAYBILL_ setting or an OTEL_ variable")

    secret_names: set[str] = set()
    autoscaled: dict[str, str] = {}
    services_seen = set()
    for name, dep in deployments.items():
        spec = dep.get("spec") or {}
        template = spec.get("template") or {}
        pod_labels = (template.get("metadata") or {}).get("labels") or {}
        pod = template.get("spec") or {}
        selector = (spec.get("selector") or {}).get("matchLabels") or {}
        if not matches(selector, pod_labels):
            problems.add(dep, "spec.selector.matchLabels", "does not match the pod template's labels")
        if pod.get("automountServiceAccountToken") is not False:
            problems.add(dep, "spec.template.spec.automountServiceAccountToken", "must be false")
        pod_sc = pod.get("securityContext") or {}
        if pod_sc.get("runAsNonRoot") is not True or pod_sc.get("runAsUser") != 10001:
            problems.add(dep, "spec.template.spec.securityContext", "must run as non-root UID 10001")
        if (pod_sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problems.add(dep, "spec.template.spec.securityContext.seccompProfile.type", "must be RuntimeDefault")
        containers = pod.get("containers") or []
        if len(containers) != 1:
            problems.add(dep, "spec.template.spec.containers", "expected exactly one container")
            continue
        c = containers[0]
        at = "spec.template.spec.containers[0]"
        service = binary(c)
        services_seen.add(service)
        if service not in SERVICE_PORTS:
            problems.add(dep, f"{at}.command", f"`{service}` is not a Waybill service")
            continue
        if name != service:
            problems.add(dep, "metadata.name", f"runs {service} under another name")

        csc = c.get("securityContext") or {}
        if csc.get("readOnlyRootFilesystem") is not True:
            problems.add(dep, f"{at}.securityContext.readOnlyRootFilesystem", "must be true")
        if csc.get("allowPrivilegeEscalation") is not False:
            problems.add(dep, f"{at}.securityContext.allowPrivilegeEscalation", "must be false")
        if "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []):
            problems.add(dep, f"{at}.securityContext.capabilities.drop", "must drop ALL")
        resources = c.get("resources") or {}
        for kind in ("requests", "limits"):
            for res in ("cpu", "memory"):
                if res not in (resources.get(kind) or {}):
                    problems.add(dep, f"{at}.resources.{kind}.{res}", "missing")

        # Ports: the service listens on WAYBILL_HTTP__PORT; the container declares it, the
        # probes and the scrape annotation use it.
        ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
        port_numbers = set(ports.values())
        listen = env_value(c, "WAYBILL_HTTP__PORT", config)
        if listen is None or not listen.isdigit():
            problems.add(dep, f"{at}.env.WAYBILL_HTTP__PORT", "must be set to the port the service listens on")
        else:
            if int(listen) not in port_numbers:
                problems.add(dep, f"{at}.ports", f"no containerPort {listen} (WAYBILL_HTTP__PORT)")
            if int(listen) != SERVICE_PORTS[service]:
                problems.add(dep, f"{at}.env.WAYBILL_HTTP__PORT",
                             f"{listen}, where {service}'s port is {SERVICE_PORTS[service]}")
        for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                            ("readinessProbe", "/readyz")):
            get = (c.get(probe) or {}).get("httpGet")
            if not get:
                problems.add(dep, f"{at}.{probe}", f"missing (expected GET {path})")
                continue
            if get.get("path") != path:
                problems.add(dep, f"{at}.{probe}.httpGet.path", f"`{get.get('path')}`, expected {path}")
            port = get.get("port")
            number = ports.get(port) if isinstance(port, str) else port
            if number not in port_numbers or (listen and listen.isdigit() and number != int(listen)):
                problems.add(dep, f"{at}.{probe}.httpGet.port",
                             f"`{port}` is not the port the service listens on ({listen})")
        scrape = ((template.get("metadata") or {}).get("annotations") or {}).get("prometheus.io/port")
        if scrape is not None and (not scrape.isdigit() or int(scrape) not in port_numbers):
            problems.add(dep, "spec.template.metadata.annotations.prometheus.io/port",
                         f"`{scrape}` is not a container port")
        if env_value(c, "OTEL_SERVICE_NAME", config) != service:
            problems.add(dep, f"{at}.env.OTEL_SERVICE_NAME", f"must be {service}")

        for source in c.get("envFrom") or []:
            if "configMapRef" in source and source["configMapRef"].get("name") not in configmaps:
                problems.add(dep, f"{at}.envFrom.configMapRef.name",
                             f"`{source['configMapRef'].get('name')}` is not in this kustomization")
            if "secretRef" in source:
                secret_names.add(source["secretRef"].get("name"))

        # The grace period covers the whole stop (see each Deployment's comment).
        grace = pod.get("terminationGracePeriodSeconds", 30)
        prestop = prestop_seconds(c)
        try:
            shutdown = float(env_value(c, "WAYBILL_HTTP__SHUTDOWN_TIMEOUT_SECONDS", config)
                             or DEFAULT_SHUTDOWN_TIMEOUT)
        except ValueError:
            problems.add(dep, f"{at}.env.WAYBILL_HTTP__SHUTDOWN_TIMEOUT_SECONDS", "not a number of seconds")
            continue
        if service == "waybill-dispatcher":
            raw = env_value(c, "WAYBILL_DELIVERY__TIMEOUT", config) or DEFAULT_DELIVERY_TIMEOUT
            try:
                timeout = parse_duration(raw)
            except ValueError as e:
                problems.add(dep, f"{at}.env.WAYBILL_DELIVERY__TIMEOUT", str(e))
                continue
            need = prestop + shutdown + timeout + DISPATCHER_RECORD_GRACE
            arithmetic = (f"preStop {prestop:g} + HTTP drain {shutdown:g} + delivery timeout "
                          f"{timeout:g} + {DISPATCHER_RECORD_GRACE} = {need:g} s")
        else:
            if prestop <= 0:
                problems.add(dep, f"{at}.lifecycle.preStop", "missing: the endpoints need time to drop the pod")
            need = prestop + shutdown + DEFAULT_TASK_GRACE
            arithmetic = (f"preStop {prestop:g} + requests {shutdown:g} + tasks "
                          f"{DEFAULT_TASK_GRACE} = {need:g} s")
        if not isinstance(grace, int) or grace < need:
            problems.add(dep, "spec.template.spec.terminationGracePeriodSeconds",
                         f"{grace} s is less than {arithmetic}")
        summary[f"{service}_grace"] = f"{grace}>={need:g}"
    for service in SERVICE_PORTS:
        if service not in services_seen:
            problems.add(f"Deployment/{service}", "metadata.name", "missing")
    if len(secret_names) > 1:
        problems.add("Deployment/*", "envFrom.secretRef.name", f"name different Secrets: {sorted(secret_names)}")
    summary["secret"] = ",".join(sorted(secret_names))

    def target_deployment(obj: dict, ref: dict, field: str) -> dict | None:
        kind = ref.get("kind", "Deployment")
        target = deployments.get(ref.get("name")) if kind == "Deployment" else None
        if target is None:
            problems.add(obj, field, f"{kind}/{ref.get('name')} is not in this kustomization")
        return target

    def pod_labels_of(dep: dict) -> dict:
        return ((dep["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}

    for svc in by_kind.get("Service", {}).values():
        selector = (svc.get("spec") or {}).get("selector") or {}
        targets = [d for d in deployments.values() if matches(selector, pod_labels_of(d))]
        if not targets:
            problems.add(svc, "spec.selector", f"{selector} matches no Deployment's pods")
            continue
        for i, port in enumerate(svc["spec"].get("ports") or []):
            target = port.get("targetPort", port.get("port"))
            for dep in targets:
                c = dep["spec"]["template"]["spec"]["containers"][0]
                names = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
                if target not in names and target not in names.values():
                    problems.add(svc, f"spec.ports[{i}].targetPort",
                                 f"`{target}` is not a port of {describe(dep)}")

    for pdb in by_kind.get("PodDisruptionBudget", {}).values():
        selector = ((pdb.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        if not any(matches(selector, pod_labels_of(d)) for d in deployments.values()):
            problems.add(pdb, "spec.selector.matchLabels", f"{selector} matches no Deployment's pods")
    for name in deployments:
        if not any(matches(((p.get("spec") or {}).get("selector") or {}).get("matchLabels") or {},
                           pod_labels_of(deployments[name]))
                   for p in by_kind.get("PodDisruptionBudget", {}).values()):
            problems.add(f"Deployment/{name}", "(pods)", "no PodDisruptionBudget covers them")

    for hpa in by_kind.get("HorizontalPodAutoscaler", {}).values():
        spec = hpa.get("spec") or {}
        target = target_deployment(hpa, spec.get("scaleTargetRef") or {}, "spec.scaleTargetRef")
        if target is not None:
            autoscaled[target["metadata"]["name"]] = describe(hpa)
        low, high = spec.get("minReplicas", 1), spec.get("maxReplicas", 0)
        if not (isinstance(low, int) and isinstance(high, int)) or low > high:
            problems.add(hpa, "spec.minReplicas", "must be an integer no larger than maxReplicas")

    auths = by_kind.get("TriggerAuthentication", {})
    for so in by_kind.get("ScaledObject", {}).values():
        spec = so.get("spec") or {}
        target = target_deployment(so, spec.get("scaleTargetRef") or {}, "spec.scaleTargetRef")
        if target is not None:
            name = target["metadata"]["name"]
            if name in autoscaled:
                problems.add(so, "spec.scaleTargetRef", f"{describe(target)} is scaled by {autoscaled[name]} too")
            autoscaled[name] = describe(so)
            if binary(target["spec"]["template"]["spec"]["containers"][0]) != "waybill-dispatcher":
                problems.add(so, "spec.scaleTargetRef.name", "KEDA scales the dispatcher only")
        low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
        if isinstance(low, int) and low < 1:
            problems.add(so, "spec.minReplicaCount",
                         "must be at least 1: the return queues are no trigger and need a dispatcher")
        if not (isinstance(low, int) and isinstance(high, int)):
            problems.add(so, "spec.minReplicaCount", "replica bounds must be integers")
        elif low > high:
            problems.add(so, "spec.minReplicaCount", "above maxReplicaCount")
        # Fallback: the count KEDA asks for while it cannot read the queues.
        fallback = spec.get("fallback")
        if not fallback:
            problems.add(so, "spec.fallback",
                         "missing: without it a KEDA that cannot read the queues leaves no safe count")
            fallback_replicas = None
        else:
            fallback_replicas = fallback.get("replicas")
            threshold = fallback.get("failureThreshold")
            if not isinstance(threshold, int) or threshold < 1:
                problems.add(so, "spec.fallback.failureThreshold", f"`{threshold}` is not a positive integer")
            if not isinstance(fallback_replicas, int) or (
                    isinstance(low, int) and isinstance(high, int)
                    and not low <= fallback_replicas <= high):
                problems.add(so, "spec.fallback.replicas",
                             f"`{fallback_replicas}` is not between minReplicaCount {low} and "
                             f"maxReplicaCount {high}")
        work = {f"{prefix}.dispatch", f"{prefix}.deliveries"}
        seen = set()
        for i, trigger in enumerate(spec.get("triggers") or []):
            at = f"spec.triggers[{i}]"
            meta = trigger.get("metadata") or {}
            if trigger.get("type") != "rabbitmq":
                problems.add(so, f"{at}.type", f"`{trigger.get('type')}`, expected rabbitmq")
                continue
            queue = meta.get("queueName")
            if queue not in work:
                problems.add(so, f"{at}.metadata.queueName",
                             f"`{queue}` is not a work queue of prefix `{prefix}` "
                             f"(WAYBILL_BROKER__PREFIX): expected one of {sorted(work)}")
            seen.add(queue)
            if meta.get("mode") != "QueueLength":
                problems.add(so, f"{at}.metadata.mode", f"`{meta.get('mode')}`, expected QueueLength")
            if meta.get("protocol") != "amqp":
                problems.add(so, f"{at}.metadata.protocol", "expected amqp (the services' broker URL)")
            if trigger.get("metricType", "AverageValue") != "AverageValue":
                problems.add(so, f"{at}.metricType",
                             f"`{trigger.get('metricType')}`: KEDA supports spec.fallback only for "
                             "AverageValue triggers (the rabbitmq default)")
            try:
                if float(meta.get("value", "")) <= 0:
                    raise ValueError
            except ValueError:
                problems.add(so, f"{at}.metadata.value", f"`{meta.get('value')}` is not a positive number")
            if "host" in meta:
                problems.add(so, f"{at}.metadata.host", "credentials belong in the TriggerAuthentication")
            ref = (trigger.get("authenticationRef") or {}).get("name")
            if ref not in auths:
                problems.add(so, f"{at}.authenticationRef.name", f"`{ref}` is not in this kustomization")
        for queue in sorted(work - seen):
            problems.add(so, "spec.triggers", f"no trigger on `{queue}`")
        summary["keda"] = f"{low}-{high}, fallback {fallback_replicas}, on {','.join(sorted(seen))}"

    for auth in auths.values():
        refs = (auth.get("spec") or {}).get("secretTargetRef") or []
        if not any(r.get("parameter") == "host" for r in refs):
            problems.add(auth, "spec.secretTargetRef", "no `host` parameter")
        for i, ref in enumerate(refs):
            if ref.get("name") not in secret_names:
                problems.add(auth, f"spec.secretTargetRef[{i}].name",
                             f"`{ref.get('name')}`, but the Deployments read {sorted(secret_names)}")
            key = ref.get("key", "")
            if key.startswith("WAYBILL_") and key != "WAYBILL_BROKER__URL":
                problems.add(auth, f"spec.secretTargetRef[{i}].key",
                             f"`{key}`: the broker URL is WAYBILL_BROKER__URL (other WAYBILL_ keys are settings)")
            # Quorum queues mean a RabbitMQ cluster, whose WAYBILL_BROKER__URL lists its nodes
            # separated by commas: KEDA cannot parse that, it needs a key with one URL
            # (KEDA_RABBITMQ_HOST, say; any name not starting with WAYBILL_).
            if ref.get("parameter") == "host":
                summary["keda_host"] = key
                if queue_type == "quorum" and key == "WAYBILL_BROKER__URL":
                    problems.add(auth, f"spec.secretTargetRef[{i}].key",
                                 "`WAYBILL_BROKER__URL` with quorum queues (a cluster): KEDA cannot parse "
                                 "a list of nodes; read one URL from another key, e.g. KEDA_RABBITMQ_HOST")

    for name, dep in deployments.items():
        if name in autoscaled and "replicas" in (dep.get("spec") or {}):
            problems.add(dep, "spec.replicas",
                         f"set, while {autoscaled[name]} owns the count (each apply would reset it)")
    return summary


# ---- the run ----------------------------------------------------------------------------------

def render(directory: Path) -> list[dict]:
    out = subprocess.run([str(KUBECTL), "kustomize", str(directory)], capture_output=True,
                         text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip() or f"kubectl kustomize exited {out.returncode}")
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def validate(where: str, objects: list[dict]) -> tuple[Problems, dict]:
    problems = Problems(where)
    for obj in objects:
        check_schema(obj, problems)
    try:
        summary = check_references(objects, problems)
    except (AttributeError, KeyError, TypeError, IndexError) as e:
        # A shape the schemas let through but the cross-checks cannot read.
        problems.add("(objects)", "(structure)", f"cannot be cross-checked: {type(e).__name__}: {e}")
        summary = {}
    return problems, summary


def self_check(objects: list[dict]) -> list[str]:
    """Broken copies of a valid rendering that the validator must refuse."""

    def broken(description: str, expect: str, kind: str, name: str, change):
        copies = copy.deepcopy(objects)
        target = next(o for o in copies if o["kind"] == kind and o["metadata"]["name"] == name)
        change(target)
        return description, expect, copies

    def so_spec(o):
        return o["spec"]

    def dispatcher(o):
        return o["spec"]["template"]["spec"]

    cases = [
        broken("a misspelt ScaledObject field (minReplicaCont)", "spec.minReplicaCont: Extra inputs",
               "ScaledObject", "waybill-dispatcher",
               lambda o: so_spec(o).update(minReplicaCont=so_spec(o).pop("minReplicaCount"))),
        broken("a string for an integer ScaledObject field", "spec.maxReplicaCount: Input should be a valid integer",
               "ScaledObject", "waybill-dispatcher",
               lambda o: so_spec(o).update(maxReplicaCount="10")),
        broken("a misspelt TriggerAuthentication field", "paramter: Extra inputs",
               "TriggerAuthentication", "waybill-rabbitmq",
               lambda o: o["spec"]["secretTargetRef"][0].update(paramter="host")),
        broken("a misspelt Deployment field (imagePullPolcy)", "'imagePullPolcy' was unexpected",
               "Deployment", "waybill-api",
               lambda o: o["spec"]["template"]["spec"]["containers"][0].update(imagePullPolcy="Always")),
        broken("a string for an integer Service port", "spec.ports.0.port: '8080' is not of type",
               "Service", "waybill-api",
               lambda o: o["spec"]["ports"][0].update(port="8080")),
        broken("a trigger on a retry queue", "`waybill.retry.5m` is not a work queue",
               "ScaledObject", "waybill-dispatcher",
               lambda o: so_spec(o)["triggers"][0]["metadata"].update(queueName="waybill.retry.5m")),
        broken("a dispatcher grace period below its delivery timeout", "terminationGracePeriodSeconds: 20 s is less than",
               "Deployment", "waybill-dispatcher",
               lambda o: dispatcher(o).update(terminationGracePeriodSeconds=20)),
        broken("a Service selecting no pods", "matches no Deployment's pods",
               "Service", "waybill-ingest",
               lambda o: o["spec"]["selector"].update({"app.kubernetes.io/name": "waybill-ingset"})),
        broken("a probe on another port", "readinessProbe.httpGet.port: `8080`",
               "Deployment", "waybill-ingest",
               lambda o: o["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"].update(port=8080)),
        broken("fixed replicas on the autoscaled dispatcher", "spec.replicas: set, while",
               "Deployment", "waybill-dispatcher",
               lambda o: o["spec"].update(replicas=2)),
        broken("a ScaledObject without a fallback", "spec.fallback: missing",
               "ScaledObject", "waybill-dispatcher",
               lambda o: so_spec(o).pop("fallback")),
        broken("a fallback above maxReplicaCount", "spec.fallback.replicas: `99` is not between",
               "ScaledObject", "waybill-dispatcher",
               lambda o: so_spec(o)["fallback"].update(replicas=99)),
        broken("a trigger with metricType Value (no fallback for it)", "spec.triggers[1].metricType: `Value`",
               "ScaledObject", "waybill-dispatcher",
               lambda o: so_spec(o)["triggers"][1].update(metricType="Value")),
        broken("KEDA reading the broker URL list of a cluster", "`WAYBILL_BROKER__URL` with quorum queues",
               "ConfigMap", "waybill-config",
               lambda o: o["data"].update(WAYBILL_BROKER__QUEUE_TYPE="quorum")),
        broken("a TriggerAuthentication key that is a setting", "`WAYBILL_BROKER__PREFIX`: the broker URL is",
               "TriggerAuthentication", "waybill-rabbitmq",
               lambda o: o["spec"]["secretTargetRef"][0].update(key="WAYBILL_BROKER__PREFIX")),
    ]
    failures = []
    for description, expect, copies in cases:
        problems, _ = validate("self-check", copies)
        if not any(expect in error for error in problems.errors):
            failures.append(f"self-check: the validator did not refuse {description} "
                            f"(expected an error with `{expect}`, got {problems.errors or 'none'})")
    return failures


def main() -> int:
    targets = [HERE / "base"] + sorted(
        p.parent for p in (HERE / "overlays").glob("*/kustomization.yaml"))
    failed = False
    rendered: dict[str, list[dict]] = {}
    for directory in targets:
        where = str(directory.relative_to(HERE))
        try:
            rendered[where] = render(directory)
        except RuntimeError as e:
            print(f"FAIL {where}: kubectl kustomize: {e}")
            failed = True

    reference = next((objs for objs in rendered.values()
                      if any(o["kind"] == "ScaledObject" for o in objs)), None)
    if reference is None:
        print("FAIL self-check: no overlay renders a ScaledObject to check the validator with")
        failed = True
    else:
        for failure in self_check(reference):
            print(f"FAIL {failure}")
            failed = True

    for where, objects in rendered.items():
        problems, summary = validate(where, objects)
        if problems.errors:
            failed = True
            for error in problems.errors:
                print(f"FAIL {error}")
        else:
            details = [f"{summary['objects']} objects", f"prefix {summary['prefix']}",
                       f"{summary['queue_type']} queues", f"secret {summary['secret']}"]
            if "keda" in summary:
                details.append(f"KEDA {summary['keda']}")
            if "keda_host" in summary:
                details.append(f"KEDA host from {summary['keda_host']}")
            details.append(f"dispatcher grace {summary.get('waybill-dispatcher_grace')} s")
            print(f"ok   {where}: " + "; ".join(details))

    template = HERE / "secret-template.yaml"
    problems = Problems(template.name)
    for obj in yaml.safe_load_all(template.read_text()):
        if obj:
            check_schema(obj, problems)
    for error in problems.errors:
        print(f"FAIL {error}")
    failed = failed or bool(problems.errors)
    if not problems.errors:
        print(f"ok   {template.name}")

    versions = ", ".join(v.rsplit(".", 1)[0] for v in K8S_VERSIONS)
    if failed:
        print(f"kubernetes manifests: INVALID (schemas: Kubernetes {versions} strict, KEDA CRDs)")
        return 1
    print(f"kubernetes manifests: valid (schemas: Kubernetes {versions} strict, KEDA CRDs; "
          "self-check refused every broken copy)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
