"""Validates everything under deploy/ and summarises it for tests/e2e/deploy.rs.

Run with the tools tests/run installs: `target/deploy-venv/bin/python tests/deploy/check.py`.

- yamllint (deploy/.yamllint, warnings count) over deploy/;
- hadolint over deploy/Dockerfile, plus the essentials of the image checked here as well
  (multi-stage, tagged base images, non-root USER, EXPOSE, HEALTHCHECK, the BINARY argument)
  and of .dockerignore;
- every kustomize overlay under deploy/k8s/overlays, rendered by this script (resources,
  namespace, images and strategic-merge patches: the subset of kustomize the overlays use;
  anything else is reported), each object validated against the Kubernetes OpenAPI schemas of
  KUBERNETES_VERSION by kubernetes-validate (offline, strict: unknown fields are errors), and
  KEDA's objects, which those schemas do not have, checked field by field here; then the
  references between objects (envFrom, probes' named ports, selectors, autoscaler targets,
  KEDA authentication) and the operational rules of deploy/README.md;
- deploy/compose.yaml: the services, their builds, health checks and settings.

It prints one line of JSON and exits 1 if there was any error:

    {"env": [every variable the manifests and compose.yaml set for a Switchboard process],
     "env_where": {variable: [where it is set]},
     "probes": [{"binary", "path", "port", "where", "setting": {the port variable, if set}}],
     "queues": [every queue name or regex the KEDA objects reference],
     "scaling": [{"binary", "min", "max", "triggers": [{"queue", "regex"}], "where"}],
     "errors": [...]}

The test checks the summary against the code: variables against switchboard::config::KEYS,
probes against the ports the binaries serve, queues against the queues they declare.

`--with-kubectl` also renders each overlay with `kubectl kustomize` and reports any
difference from this script's rendering (for whoever changes the kustomizations and has
kubectl; CI machines need not).
"""

from __future__ import annotations

import base64
import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.33.0"
ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
TOOLS = Path(sys.executable).parent
BINARIES = ("switchboard-edge", "switchboard-messages", "switchboard-presence", "switchboard-notifier")
# The port variable of each binary (docs/reference.md, Configuration).
PORT_VARIABLE = {b: ("WEBSOCKET_PORT" if b == "switchboard-edge" else "METRICS_PORT") for b in BINARIES}
KEDA_API = "keda.sh/v1alpha1"
CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PersistentVolume",
    "StorageClass", "PriorityClass", "IngressClass", "ClusterTriggerAuthentication",
}
KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}


class Report:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.env: dict[str, set[str]] = {}
        self.probes: list[dict] = []
        self.queues: set[str] = set()
        self.scaling: list[dict] = []

    def error(self, message: str) -> None:
        self.errors.append(message)

    def set_env(self, name: str, where: str) -> None:
        self.env.setdefault(name, set()).add(where)


def rel(path: Path) -> str:
    return str(path.relative_to(DEPLOY)) if path.is_relative_to(DEPLOY) else str(path)


def load_documents(path: Path, report: Report) -> list[dict]:
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except (OSError, yaml.YAMLError) as e:
        report.error(f"{rel(path)}: cannot read YAML: {e}")
        return []
    for d in documents:
        if not isinstance(d, dict):
            report.error(f"{rel(path)}: a document is not a mapping")
    return [d for d in documents if isinstance(d, dict)]


# ---- linters -------------------------------------------------------------------------------


def run_tool(args: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return subprocess.CompletedProcess(args, 127, "", f"{args[0]} is not installed: run tests/run, whose "
                                           f"`deploy tooling` step installs it in target/deploy-venv")


def lint_yaml(report: Report) -> None:
    result = run_tool([str(TOOLS / "yamllint"), "--strict", "-f", "parsable", "-c", str(DEPLOY / ".yamllint"),
                       str(DEPLOY)])
    if result.returncode != 0:
        lines = (result.stdout + result.stderr).strip().splitlines() or [f"exit {result.returncode}"]
        report.errors.extend(f"yamllint: {line.replace(str(ROOT) + '/', '')}" for line in lines)


def lint_dockerfile(report: Report) -> None:
    dockerfile = DEPLOY / "Dockerfile"
    if not dockerfile.exists():
        report.error("deploy/Dockerfile is missing")
        return
    result = run_tool([str(TOOLS / "hadolint"), "-f", "json", str(dockerfile)])
    try:
        findings = json.loads(result.stdout or "[]")
    except json.JSONDecodeError:
        findings = [{"line": 0, "code": "hadolint", "message": (result.stdout + result.stderr).strip()}]
    for f in findings:
        report.error(f"hadolint: deploy/Dockerfile:{f.get('line')}: {f.get('code')} {f.get('message')}")
    if result.returncode != 0 and not findings:
        report.error(f"hadolint failed ({result.returncode}): {result.stderr.strip()}")

    # The essentials, independently of hadolint's rule set.
    instructions = []
    continued = ""
    in_heredoc = None
    for line in dockerfile.read_text().splitlines():
        if in_heredoc:
            if line.strip() == in_heredoc:
                in_heredoc = None
            continue
        if not continued and (not line.strip() or line.lstrip().startswith("#")):
            continue
        continued += line.rstrip("\\") + " "
        if line.endswith("\\"):
            continue
        instructions.append(continued.split(None, 1))
        heredoc = re.search(r"<<-?'?\"?([A-Z_]+)", continued)
        in_heredoc = heredoc.group(1) if heredoc else None
        continued = ""
    ops = [(i[0].upper(), i[1].strip() if len(i) > 1 else "") for i in instructions]
    froms = [arg for op, arg in ops if op == "FROM"]
    if len(froms) < 2:
        report.error("deploy/Dockerfile: not multi-stage (one FROM); build in one stage, run in another")
    for arg in froms:
        image = arg.split()[0]
        if image.lower() == "scratch":
            continue
        name_tag = image.rsplit("/", 1)[-1]
        if ":" not in name_tag and "@" not in image:
            report.error(f"deploy/Dockerfile: FROM {image} has no tag; pin a version")
        elif name_tag.endswith(":latest"):
            report.error(f"deploy/Dockerfile: FROM {image} uses latest; pin a version")
    users = [arg for op, arg in ops if op == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        report.error("deploy/Dockerfile: the runtime stage must end with USER <non-root uid>")
    for op, what in (("EXPOSE", "the ports"), ("HEALTHCHECK", "a health check"), ("ENTRYPOINT", "an entrypoint")):
        if not any(o == op for o, _ in ops):
            report.error(f"deploy/Dockerfile: no {op}: declare {what}")
    if not any(op == "ARG" and arg.startswith("BINARY") for op, arg in ops):
        report.error("deploy/Dockerfile: no ARG BINARY choosing the binary")

    ignore = ROOT / ".dockerignore"
    patterns = ignore.read_text().split() if ignore.exists() else []
    for needed in ("**/target", ".git", "**/node_modules"):
        if needed not in patterns:
            report.error(f".dockerignore: add {needed} so the build context stays small")


# ---- kustomize -----------------------------------------------------------------------------


def merge_key(items: list) -> str | None:
    """The key a strategic merge patch merges these list items by (containers by name, ports by
    containerPort or port, ...), or None when the list is replaced as a whole."""
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    for key in ("containerPort", "port", "mountPath", "name"):
        if all(key in i for i in items):
            return key
    return None


def strategic_merge(base, patch, builtin: bool):
    """Kubernetes' strategic merge patch for the fields the overlays use: maps merge, `null`
    deletes, lists of named items merge by name (built-in kinds only: kustomize has no merge
    keys for custom resources, whose lists are replaced, as in a JSON merge patch)."""
    if not (isinstance(base, dict) and isinstance(patch, dict)):
        return copy.deepcopy(patch)
    merged = dict(base)
    for key, value in patch.items():
        if key.startswith("$"):
            raise ValueError(f"patch directive {key} is not supported by tests/deploy/check.py")
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, list) and isinstance(merged.get(key), list) and builtin:
            key_field = merge_key(merged[key] + value)
            if key_field is None:
                merged[key] = copy.deepcopy(value)
                continue
            items = [copy.deepcopy(i) for i in merged[key]]
            for item in value:
                index = next((n for n, i in enumerate(items) if i[key_field] == item[key_field]), None)
                if index is None:
                    items.append(copy.deepcopy(item))
                else:
                    items[index] = strategic_merge(items[index], item, builtin)
            merged[key] = items
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = strategic_merge(merged[key], value, builtin)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def split_image(image: str) -> tuple[str, str | None, str | None]:
    digest = None
    if "@" in image:
        image, digest = image.split("@", 1)
    name, tag = image, None
    if ":" in image.rsplit("/", 1)[-1]:
        name, tag = image.rsplit(":", 1)
    return name, tag, digest


def set_images(node, images: list[dict]) -> None:
    if isinstance(node, dict):
        for field in ("containers", "initContainers"):
            for container in node.get(field) or []:
                if isinstance(container, dict) and isinstance(container.get("image"), str):
                    name, tag, digest = split_image(container["image"])
                    for rule in images:
                        if rule.get("name") == name:
                            name = rule.get("newName", name)
                            if "newTag" in rule:
                                tag, digest = str(rule["newTag"]), None
                            if "digest" in rule:
                                tag, digest = None, rule["digest"]
                            container["image"] = name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
        for value in node.values():
            set_images(value, images)
    elif isinstance(node, list):
        for value in node:
            set_images(value, images)


def render(directory: Path, report: Report) -> list[tuple[dict, str]]:
    """Renders the kustomization in `directory`: [(object, the file it came from)]."""
    path = directory / "kustomization.yaml"
    documents = load_documents(path, report)
    if len(documents) != 1:
        report.error(f"{rel(path)}: expected one Kustomization document")
        return []
    kustomization = documents[0]
    unknown = set(kustomization) - KUSTOMIZATION_FIELDS
    if unknown:
        report.error(f"{rel(path)}: tests/deploy/check.py renders only {sorted(KUSTOMIZATION_FIELDS)}; "
                     f"it does not know {sorted(unknown)} (extend render() or use a patch)")
    objects: list[tuple[dict, str]] = []
    for resource in kustomization.get("resources") or []:
        target = (directory / resource).resolve()
        if target.is_dir():
            objects += render(target, report)
        elif target.is_file():
            objects += [(d, rel(target)) for d in load_documents(target, report)]
        else:
            report.error(f"{rel(path)}: resource {resource} does not exist")
    for entry in kustomization.get("patches") or []:
        if not isinstance(entry, dict) or "target" in entry or "options" in entry:
            report.error(f"{rel(path)}: only patches given by `path` or `patch` (a strategic merge patch "
                         f"naming its object) are supported: {entry}")
            continue
        if "path" in entry:
            patches = load_documents(directory / entry["path"], report)
        else:
            patches = [d for d in yaml.safe_load_all(entry.get("patch", "")) if isinstance(d, dict)]
        for patch in patches:
            kind, name = patch.get("kind"), (patch.get("metadata") or {}).get("name")
            matches = [n for n, (o, _) in enumerate(objects)
                       if o.get("kind") == kind and o.get("metadata", {}).get("name") == name
                       and o.get("apiVersion") == patch.get("apiVersion")]
            if len(matches) != 1:
                report.error(f"{rel(path)}: the patch for {kind}/{name} matches {len(matches)} objects, not 1")
                continue
            obj, origin = objects[matches[0]]
            try:
                patched = strategic_merge(obj, patch, builtin=not patch.get("apiVersion", "").startswith(KEDA_API))
            except ValueError as e:
                report.error(f"{rel(path)}: {e}")
                continue
            objects[matches[0]] = (patched, origin)
    if kustomization.get("images"):
        for obj, _ in objects:
            set_images(obj, kustomization["images"])
    namespace = kustomization.get("namespace")
    if namespace:
        for obj, _ in objects:
            if obj.get("kind") not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = namespace
            elif obj.get("kind") == "Namespace":
                obj["metadata"]["name"] = namespace
    return objects


def compare_with_kubectl(directory: Path, objects: list[tuple[dict, str]], report: Report) -> None:
    kubectl = shutil.which("kubectl")
    if not kubectl:
        report.error("--with-kubectl: kubectl is not installed")
        return
    result = run_tool([kubectl, "kustomize", str(directory)])
    if result.returncode != 0:
        report.error(f"kubectl kustomize {rel(directory)} failed: {result.stderr.strip()}")
        return

    def identity(o: dict) -> tuple:
        return (o.get("kind"), o.get("metadata", {}).get("namespace"), o.get("metadata", {}).get("name"))

    theirs = {identity(o): o for o in yaml.safe_load_all(result.stdout) if o}
    ours = {identity(o): o for o, _ in objects}
    for key in sorted(set(theirs) | set(ours), key=str):
        if json.dumps(theirs.get(key), sort_keys=True) != json.dumps(ours.get(key), sort_keys=True):
            report.error(f"{rel(directory)}: {key} renders differently with kubectl kustomize: "
                         f"kubectl {json.dumps(theirs.get(key), sort_keys=True)} / "
                         f"check.py {json.dumps(ours.get(key), sort_keys=True)}")


# ---- Kubernetes objects --------------------------------------------------------------------


def pod_spec(obj: dict) -> dict | None:
    if obj.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return ((obj.get("spec") or {}).get("template") or {}).get("spec")
    return None


def selects(selector: dict | None, labels: dict | None) -> bool:
    match = (selector or {}).get("matchLabels", selector or {})
    return bool(match) and all((labels or {}).get(k) == v for k, v in match.items())


def secret_data(obj: dict) -> dict[str, str]:
    data = {k: str(v) for k, v in (obj.get("stringData") or {}).items()}
    for key, value in (obj.get("data") or {}).items():
        try:
            data.setdefault(key, base64.b64decode(value).decode())
        except (ValueError, UnicodeDecodeError):
            data.setdefault(key, "")
    return data


def check_values(values: dict[str, str], where: str, report: Report) -> None:
    """The values whose form docs/reference.md, Configuration fixes. (The binaries check everything at start
    and exit 64 naming the variable; this catches the common slips before a deploy.)"""
    for name, value in values.items():
        if re.search(r"(_PORT|_MS)$", name) and not re.fullmatch(r"[0-9]+", value):
            report.error(f"{where}: {name}={value!r} is not a whole number")
    for name, allowed in (("RABBITMQ_QUEUE_TYPE", {"classic", "quorum"}), ("AUTH_MODE", {"database", "jwt"}),
                          ("LOG_FORMAT", {"pretty", "json"}), ("DATABASE_MIGRATE", {"true", "false"}),
                          ("RABBITMQ_TLS", {"true", "false"})):
        if name in values and values[name] not in allowed:
            report.error(f"{where}: {name}={values[name]!r}; expected one of {sorted(allowed)}")
    if values.get("RABBITMQ_CA_FILE") and values.get("RABBITMQ_TLS") != "true":
        report.error(f"{where}: RABBITMQ_CA_FILE is set without RABBITMQ_TLS=true (the processes refuse to start)")


def shutdown_grace_ms(values: dict[str, str]) -> int:
    """SHUTDOWN_GRACE_MS as the processes will read it (10000 when unset; a malformed value is
    reported by check_values)."""
    value = values.get("SHUTDOWN_GRACE_MS", "10000")
    return int(value) if value.isdigit() else 10000


def pause_seconds(handler: dict | None) -> int:
    """How long a preStop hook pauses (the sleep action, or an exec of sleep)."""
    if not handler:
        return 0
    if "sleep" in handler:
        return int(handler["sleep"].get("seconds", 0))
    command = (handler.get("exec") or {}).get("command") or []
    if command and Path(command[0]).name == "sleep" and len(command) > 1 and command[1].isdigit():
        return int(command[1])
    return 0


def check_keda(obj: dict, where: str, index: dict, report: Report) -> None:
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    if kind == "TriggerAuthentication":
        refs = spec.get("secretTargetRef")
        if not isinstance(refs, list) or not refs:
            report.error(f"{where}: spec.secretTargetRef must list the secrets KEDA reads")
            return
        for ref in refs:
            secret = index.get(("Secret", ref.get("name")))
            if not all(isinstance(ref.get(f), str) and ref.get(f) for f in ("parameter", "name", "key")):
                report.error(f"{where}: every secretTargetRef needs parameter, name and key: {ref}")
            elif secret is None:
                report.error(f"{where}: Secret {ref['name']} is not part of this overlay")
            elif ref["key"] not in secret_data(secret):
                report.error(f"{where}: Secret {ref['name']} has no key {ref['key']}")
        return
    if kind != "ScaledObject":
        report.error(f"{where}: check.py knows KEDA's ScaledObject and TriggerAuthentication, not {kind}")
        return
    target = spec.get("scaleTargetRef") or {}
    deployment = index.get((target.get("kind", "Deployment"), target.get("name")))
    if deployment is None:
        report.error(f"{where}: scaleTargetRef {target} names no Deployment of this overlay")
    low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
    if not (isinstance(low, int) and isinstance(high, int) and 0 <= low <= high and high >= 1):
        report.error(f"{where}: need 0 <= minReplicaCount <= maxReplicaCount, >= 1 (got {low}, {high})")
    for field in ("pollingInterval", "cooldownPeriod"):
        if field in spec and not (isinstance(spec[field], int) and spec[field] > 0):
            report.error(f"{where}: spec.{field} must be a positive number of seconds")
    triggers = spec.get("triggers")
    if not isinstance(triggers, list) or not triggers:
        report.error(f"{where}: spec.triggers must list at least one trigger")
        return
    watched = []
    for n, trigger in enumerate(triggers):
        at = f"{where} trigger {n}"
        metadata = trigger.get("metadata") or {}
        if trigger.get("type") != "rabbitmq":
            report.error(f"{at}: type {trigger.get('type')!r}; Switchboard's workers scale on rabbitmq")
            continue
        for key, value in metadata.items():
            if not isinstance(value, str):
                report.error(f"{at}: metadata.{key} must be a string (quote it): KEDA's metadata is text")
        if any(k in metadata for k in ("host", "hostFromEnv")):
            report.error(f"{at}: put the broker URL in a Secret read through a TriggerAuthentication, "
                         f"not in metadata")
        queue = metadata.get("queueName")
        if not isinstance(queue, str) or not queue:
            report.error(f"{at}: metadata.queueName is required")
            continue
        if metadata.get("mode", "QueueLength") not in ("QueueLength", "MessageRate"):
            report.error(f"{at}: metadata.mode must be QueueLength or MessageRate")
        try:
            if float(metadata.get("value", "")) <= 0:
                raise ValueError
        except ValueError:
            report.error(f"{at}: metadata.value must be a positive number (messages per copy)")
        protocol = metadata.get("protocol", "auto")
        if protocol not in ("auto", "amqp", "http"):
            report.error(f"{at}: metadata.protocol must be auto, amqp or http")
        uses_regex = metadata.get("useRegex", "false")
        if uses_regex not in ("true", "false"):
            report.error(f"{at}: metadata.useRegex must be \"true\" or \"false\"")
        if uses_regex == "true":
            if protocol != "http":
                report.error(f"{at}: useRegex needs protocol: http (the management API)")
            if metadata.get("operation", "sum") not in ("sum", "max", "avg"):
                report.error(f"{at}: metadata.operation must be sum, max or avg")
            try:
                re.compile(queue)
            except re.error as e:
                report.error(f"{at}: queueName is not a valid regex: {e}")
        auth = trigger.get("authenticationRef") or {}
        if index.get((auth.get("kind", "TriggerAuthentication"), auth.get("name"))) is None:
            report.error(f"{at}: authenticationRef {auth.get('name')!r} names no TriggerAuthentication of this "
                         f"overlay")
        watched.append({"queue": queue, "regex": uses_regex == "true"})
    binary = None
    if deployment is not None:
        names = [c.get("name") for c in (pod_spec(deployment) or {}).get("containers") or []]
        binary = next((n for n in names if n in BINARIES), None)
    report.queues.update(w["queue"] for w in watched)
    report.scaling.append({"binary": binary, "min": low, "max": high, "triggers": watched, "where": where})


def check_switchboard_container(spec: dict, container: dict, where: str, index: dict, report: Report) -> None:
    binary = container["name"]
    image = container.get("image", "")
    name, tag, digest = split_image(image)
    if not (tag or digest) or tag == "latest":
        report.error(f"{where}: image {image!r} needs a version tag (not latest)")
    if not name.endswith("/" + binary) and name != binary:
        report.error(f"{where}: container {binary} runs image {image!r}; use the {binary} image "
                     f"(docker build --build-arg BINARY={binary.removeprefix('switchboard-')})")

    values: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        for ref_field, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
            ref = source.get(ref_field)
            if not ref:
                continue
            referenced = index.get((kind, ref.get("name")))
            if referenced is None:
                if not ref.get("optional"):
                    report.error(f"{where}: envFrom {kind} {ref.get('name')} is not part of this overlay")
                continue
            data = secret_data(referenced) if kind == "Secret" else {
                k: str(v) for k, v in (referenced.get("data") or {}).items()}
            for key, value in data.items():
                variable = source.get("prefix", "") + key
                values[variable] = value
                report.set_env(variable, f"{where.split(':')[0]}: {kind}/{ref.get('name')}")
    for entry in container.get("env") or []:
        variable = entry.get("name")
        report.set_env(variable, f"{where} env")
        if "value" in entry:
            values[variable] = str(entry["value"])
        for ref_field, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
            ref = (entry.get("valueFrom") or {}).get(ref_field)
            if ref:
                referenced = index.get((kind, ref.get("name")))
                data = {} if referenced is None else (
                    secret_data(referenced) if kind == "Secret" else referenced.get("data") or {})
                if ref.get("key") not in data and not ref.get("optional"):
                    report.error(f"{where}: env {variable} reads {kind} {ref.get('name')} key {ref.get('key')}, "
                                 f"which this overlay does not have")
                values[variable] = str(data.get(ref.get("key"), ""))
    check_values(values, where, report)
    # The CA file must be on a volume (rabbitmq-ca-mount.yaml): the image does not have it.
    ca_file = values.get("RABBITMQ_CA_FILE")
    mounts = [m.get("mountPath", "").rstrip("/") + "/" for m in container.get("volumeMounts") or []]
    if ca_file and not any(ca_file.startswith(mount) for mount in mounts):
        report.error(f"{where}: RABBITMQ_CA_FILE={ca_file!r} is on no volume mounted in the container "
                     f"(mounts: {mounts}); the processes would stop at start")

    ports = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
    variable = PORT_VARIABLE[binary]
    for probe_field, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        probe = container.get(probe_field)
        http = (probe or {}).get("httpGet")
        if not http:
            report.error(f"{where}: {probe_field} must be an httpGet on {path}")
            continue
        if http.get("path") != path:
            report.error(f"{where}: {probe_field} path is {http.get('path')!r}; {probe_field} must use {path}")
        port = http.get("port")
        if isinstance(port, str):
            if port not in ports:
                report.error(f"{where}: {probe_field} uses port {port!r}, which the container does not name")
            port = ports.get(port)
        report.probes.append({"binary": binary, "path": http.get("path"), "port": port,
                              "where": f"{where} {probe_field}",
                              "setting": {variable: values[variable]} if variable in values else {}})

    resources = container.get("resources") or {}
    if not all(r in (resources.get("requests") or {}) for r in ("cpu", "memory")):
        report.error(f"{where}: set resources.requests.cpu and .memory (the scheduler and the HPA use them)")
    if "memory" not in (resources.get("limits") or {}):
        report.error(f"{where}: set resources.limits.memory")

    grace_ms = shutdown_grace_ms(values)
    pause = pause_seconds((container.get("lifecycle") or {}).get("preStop"))
    period = spec.get("terminationGracePeriodSeconds")
    if not isinstance(period, int) or period * 1000 <= grace_ms + pause * 1000:
        report.error(f"{where}: terminationGracePeriodSeconds ({period}) must be above SHUTDOWN_GRACE_MS "
                     f"({grace_ms} ms) plus the preStop pause ({pause} s), or the kubelet kills the drain")


def check_overlay(directory: Path, report: Report, with_kubectl: bool) -> None:
    overlay = rel(directory)
    objects = render(directory, report)
    if with_kubectl:
        compare_with_kubectl(directory, objects, report)
    index: dict[tuple, dict] = {}
    referenced: set[tuple] = set()
    for obj, origin in objects:
        meta = obj.get("metadata") or {}
        key = (obj.get("kind"), meta.get("name"))
        if key in index:
            report.error(f"{overlay}: {key[0]}/{key[1]} is defined twice")
        index[key] = obj

    autoscaled: dict[str, list[str]] = {}
    for obj, origin in objects:
        kind, name = obj.get("kind"), (obj.get("metadata") or {}).get("name")
        where = f"{overlay}: {kind}/{name} ({origin})"
        if obj.get("apiVersion") == KEDA_API:
            check_keda(obj, where, index, report)
            if kind == "ScaledObject":
                target = (obj.get("spec") or {}).get("scaleTargetRef") or {}
                autoscaled.setdefault(target.get("name"), []).append(f"ScaledObject/{name}")
            for ref in (obj.get("spec") or {}).get("secretTargetRef") or []:
                referenced.add(("Secret", ref.get("name")))
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            report.error(f"{where}: invalid for Kubernetes {KUBERNETES_VERSION}: {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            report.error(f"{where}: {e.message} (check.py validates built-in kinds and KEDA's only)")
        except Exception as e:  # noqa: BLE001 - any failure of the validator is a finding
            report.error(f"{where}: could not be validated: {e}")
        if kind == "HorizontalPodAutoscaler":
            autoscaled.setdefault(((obj.get("spec") or {}).get("scaleTargetRef") or {}).get("name"), []).append(
                f"HorizontalPodAutoscaler/{name}")
        if kind == "Ingress":
            for rule in (obj.get("spec") or {}).get("rules") or []:
                for path in ((rule.get("http") or {}).get("paths")) or []:
                    service = ((path.get("backend") or {}).get("service") or {}).get("name")
                    if ("Service", service) not in index:
                        report.error(f"{where}: backend Service {service} is not part of this overlay")

        spec = pod_spec(obj)
        if spec is None:
            continue
        for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
            for source in container.get("envFrom") or []:
                for field, ref_kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                    if source.get(field):
                        referenced.add((ref_kind, source[field].get("name")))
            for entry in container.get("env") or []:
                for field, ref_kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                    ref = (entry.get("valueFrom") or {}).get(field)
                    if ref:
                        referenced.add((ref_kind, ref.get("name")))
        # Mounted ConfigMaps and Secrets (init scripts, CA bundles) are read too, and must exist.
        for volume in spec.get("volumes") or []:
            sources = [volume] + [s for s in ((volume.get("projected") or {}).get("sources") or [])]
            for source in sources:
                for field, ref_kind, name_field in (("configMap", "ConfigMap", "name"),
                                                    ("secret", "Secret", "secretName")):
                    ref = source.get(field)
                    if not ref:
                        continue
                    name = ref.get(name_field, ref.get("name"))
                    referenced.add((ref_kind, name))
                    if (ref_kind, name) not in index and not ref.get("optional"):
                        report.error(f"{where}: volume {volume.get('name')} mounts {ref_kind} {name}, "
                                     f"which is not part of this overlay")
        template_labels = ((obj.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels")
        if not selects((obj.get("spec") or {}).get("selector"), template_labels):
            report.error(f"{where}: spec.selector does not select the pod template's labels")
        for container in spec.get("containers") or []:
            if container.get("name") in BINARIES:
                check_switchboard_container(spec, container, f"{where} container {container['name']}", index,
                                            report)
                binary = container["name"]
                budgets = [o for o in index.values() if o.get("kind") == "PodDisruptionBudget"
                           and selects((o.get("spec") or {}).get("selector"), template_labels)]
                if not budgets:
                    report.error(f"{where}: no PodDisruptionBudget selects {binary}'s pods")
                if binary == "switchboard-edge" and not any(
                        o.get("kind") == "Service" and selects((o.get("spec") or {}).get("selector"), template_labels)
                        for o in index.values()):
                    report.error(f"{where}: no Service selects the edge's pods")

    for obj, origin in objects:
        if obj.get("kind") == "Service":
            where = f"{overlay}: Service/{obj['metadata']['name']} ({origin})"
            selector = (obj.get("spec") or {}).get("selector")
            pods = [o for o in index.values() if pod_spec(o) is not None and selects(
                selector, ((o.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels"))]
            if not pods:
                report.error(f"{where}: its selector {selector} matches no pod template of this overlay")
            for port in (obj.get("spec") or {}).get("ports") or []:
                target = port.get("targetPort", port.get("port"))
                named = {p.get("name") for o in pods for c in pod_spec(o).get("containers") or []
                         for p in c.get("ports") or []}
                numbers = {p.get("containerPort") for o in pods for c in pod_spec(o).get("containers") or []
                           for p in c.get("ports") or []}
                if pods and target not in named | numbers:
                    report.error(f"{where}: targetPort {target!r} is no port of the pods it selects")
        if obj.get("kind") in ("ConfigMap", "Secret") and (obj["kind"], obj["metadata"]["name"]) not in referenced:
            if not (obj["kind"] == "Secret" and obj.get("type") == "kubernetes.io/tls"):
                report.error(f"{overlay}: {obj['kind']}/{obj['metadata']['name']} ({origin}) is read by nothing")

    deployments = {(o.get("metadata") or {}).get("name"): o for o in index.values() if o.get("kind") == "Deployment"}
    for binary in BINARIES:
        owners = [n for n, d in deployments.items()
                  if any(c.get("name") == binary for c in (pod_spec(d) or {}).get("containers") or [])]
        if len(owners) != 1:
            report.error(f"{overlay}: expected one Deployment running {binary}, found {owners}")
            continue
        scalers = autoscaled.get(owners[0], [])
        wanted = "HorizontalPodAutoscaler" if binary == "switchboard-edge" else "ScaledObject"
        if len(scalers) != 1 or not scalers[0].startswith(wanted):
            report.error(f"{overlay}: Deployment/{owners[0]} must be scaled by exactly one {wanted}, "
                         f"not {scalers or 'nothing'}")
        if scalers and "replicas" in (deployments[owners[0]].get("spec") or {}):
            report.error(f"{overlay}: Deployment/{owners[0]} sets spec.replicas, which {scalers[0]} owns: "
                         f"remove it, or every apply resets the autoscaler's count")


# ---- compose -------------------------------------------------------------------------------


def seconds(duration) -> float:
    if isinstance(duration, (int, float)):
        return float(duration)
    total = 0.0
    for amount, unit in re.findall(r"([0-9.]+)(ms|us|h|m|s)", str(duration)):
        total += float(amount) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 0.000001}[unit]
    return total


def check_compose(report: Report) -> None:
    path = DEPLOY / "compose.yaml"
    documents = load_documents(path, report)
    if len(documents) != 1:
        report.error("deploy/compose.yaml: expected one document")
        return
    services = documents[0].get("services") or {}
    counts: dict[str, int] = {}
    for name, service in services.items():
        where = f"compose.yaml service {name}"
        build = service.get("build")
        args = (build or {}).get("args") if isinstance(build, dict) else None
        if isinstance(args, list):
            args = dict(a.split("=", 1) for a in args)
        if not args or "BINARY" not in args:
            image = str(service.get("image", ""))
            if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
                report.error(f"{where}: image {image!r} needs a version tag (not latest)")
            continue
        binary = f"switchboard-{args['BINARY']}"
        if binary not in BINARIES:
            report.error(f"{where}: BINARY={args['BINARY']!r}; expected edge, messages, presence or notifier")
            continue
        dockerfile = (path.parent / build.get("context", ".") / build.get("dockerfile", "Dockerfile")).resolve()
        if dockerfile != DEPLOY / "Dockerfile":
            report.error(f"{where}: builds {dockerfile}, not deploy/Dockerfile")
        counts[binary] = counts.get(binary, 0) + int((service.get("deploy") or {}).get("replicas", 1))
        if "env_file" in service:
            report.error(f"{where}: env_file hides the settings from this check; use environment")
        environment = service.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(e.split("=", 1) if "=" in e else (e, "") for e in environment)
        values = {k: str(v) for k, v in environment.items()}
        for variable in values:
            report.set_env(variable, where)
        check_values(values, where, report)

        test = (service.get("healthcheck") or {}).get("test")
        if not (isinstance(test, list) and len(test) == 4 and test[:2] == ["CMD", "switchboard-probe"]):
            report.error(f"{where}: healthcheck.test must be [\"CMD\", \"switchboard-probe\", \"/readyz\", "
                         f"\"<port>\"] (the probe in the image; the port written out so it can be checked)")
        else:
            port = int(test[3]) if str(test[3]).isdigit() else test[3]
            variable = PORT_VARIABLE[binary]
            report.probes.append({"binary": binary, "path": test[2], "port": port, "where": f"{where} healthcheck",
                                  "setting": {variable: values[variable]} if variable in values else {}})
        grace_ms = shutdown_grace_ms(values)
        if seconds(service.get("stop_grace_period", "10s")) * 1000 <= grace_ms:
            report.error(f"{where}: stop_grace_period must be above SHUTDOWN_GRACE_MS ({grace_ms} ms), or "
                         f"docker stop kills the drain")
        depends = service.get("depends_on") or {}
        for needed in ("rabbitmq", "postgres"):
            condition = (depends.get(needed) or {}).get("condition") if isinstance(depends, dict) else None
            if condition != "service_healthy":
                report.error(f"{where}: depends_on.{needed}.condition should be service_healthy")
    for dependency in ("rabbitmq", "postgres"):
        if not (services.get(dependency) or {}).get("healthcheck"):
            report.error(f"compose.yaml: the {dependency} service needs a healthcheck")
    if "management" not in str((services.get("rabbitmq") or {}).get("image", "")):
        report.error("compose.yaml: use a rabbitmq image with the management plugin (tag *-management)")
    expected = {"switchboard-edge": 1, "switchboard-messages": 2, "switchboard-presence": 1, "switchboard-notifier": 1}
    if counts != expected:
        report.error(f"compose.yaml: expected copies {expected}, found {counts}")


def main() -> int:
    report = Report()
    with_kubectl = "--with-kubectl" in sys.argv[1:]
    lint_yaml(report)
    lint_dockerfile(report)
    overlays = sorted(p for p in (DEPLOY / "k8s" / "overlays").iterdir() if (p / "kustomization.yaml").exists())
    if not overlays:
        report.error("deploy/k8s/overlays has no overlay")
    for overlay in overlays:
        check_overlay(overlay, report, with_kubectl)
    check_compose(report)
    print(json.dumps({
        "env": sorted(report.env),
        "env_where": {k: sorted(v) for k, v in sorted(report.env.items())},
        "probes": report.probes,
        "queues": sorted(report.queues),
        "scaling": report.scaling,
        "errors": report.errors,
    }))
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
