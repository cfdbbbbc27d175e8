"""Checks the Helm charts the way an operator's cluster would, offline (`cargo xtask charts`).

For each chart and each values file (defaults, then charts/<chart>/ci/*-values.yaml):
  1. helm lint (helm-python-sdk: Helm as a library; no helm binary exists here);
  2. render, and validate every manifest with kubernetes-validate --strict for the oldest and
     the newest Kubernetes version we support (CRD kinds have no bundled schema: named, skipped);
  3. the config the chart renders passes the binary's own `check-config`, so chart and binary
     cannot drift; every flag the chart passes to our binaries exists in its `--help`.
Then deploy/ must equal what the charts render with default values (`--write` regenerates it),
`kubectl kustomize deploy/` must render, and the systemd unit must pass `systemd-analyze verify`.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

import helm_python
import yaml

KUBE_VERSIONS = ["1.30.0", "1.37.0"]
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "VolumeSnapshotClass"}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHARTS = {
    "tns-csi": {"namespace": "kube-system", "release": "tns-csi"},
    "warpdrive": {"namespace": "warpdrive", "release": "warpdrive"},
}
DEPLOY_HEADER = (
    "# Rendered from charts/{chart} with its default values by `cargo xtask charts --write`;\n"
    "# do not edit by hand (CI fails when this differs from the chart).\n"
)

failures = []


def fail(message):
    failures.append(message)
    print(f"   FAIL {message}", flush=True)


def render(chart, values):
    meta = CHARTS[chart]
    with helm_python.Chart.load(os.path.join(ROOT, "charts", chart)) as loaded:
        files = loaded.render(values, name=meta["release"], namespace=meta["namespace"])
    docs = []
    for name in sorted(files):
        if not name.endswith(".yaml"):
            continue
        for doc in yaml.safe_load_all(files[name]):
            if doc:
                docs.append((name, doc))
    return docs


def validate(chart, label, docs, workdir):
    paths = {}
    skipped = 0
    for index, (source, doc) in enumerate(docs):
        if doc.get("kind") in CRD_KINDS:
            skipped += 1
            continue
        path = os.path.join(workdir, f"{chart}-{label}-{index}.yaml")
        with open(path, "w") as out:
            yaml.safe_dump(doc, out)
        paths[path] = f"{source} {doc.get('kind')}/{doc['metadata'].get('name')}"
    for version in KUBE_VERSIONS:
        result = subprocess.run(
            ["kubernetes-validate", "--strict", "--quiet", "-k", version, *paths],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            report = result.stdout + result.stderr
            for path, what in paths.items():
                report = report.replace(path, what)
            fail(f"{chart} [{label}] on Kubernetes {version}: {report.strip()}")
    print(
        f"   {chart} [{label}]: {len(paths)} manifests valid on Kubernetes "
        f"{' and '.join(KUBE_VERSIONS)} (strict); {skipped} of CRD kinds not checkable offline",
        flush=True,
    )


def containers(docs, image_part):
    for _, doc in docs:
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for container in spec.get("containers", []):
            if image_part in container.get("image", ""):
                yield doc, container


def help_text(binary, subcommand=None):
    args = [binary] + ([subcommand] if subcommand else []) + ["--help"]
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


def check_flags(chart, label, binary, docs, image_part):
    known = set(re.findall(r"--[a-z][a-z0-9-]*", help_text(binary)))
    for doc, container in containers(docs, image_part):
        for arg in container.get("args", []) + container.get("command", []):
            flag = arg.split("=", 1)[0]
            if flag.startswith("--") and flag not in known:
                fail(f"{chart} [{label}] {doc['kind']} passes {flag}, which `{os.path.basename(binary)} --help` does not list")


def config_maps(docs):
    for _, doc in docs:
        if doc.get("kind") == "ConfigMap" and doc["metadata"]["name"].endswith("-config"):
            yield doc["data"]


def ca_bundle(workdir):
    """A real PEM certificate where the chart mounts the TrueNAS CA ConfigMap."""
    path = os.path.join(workdir, "ca.crt")
    if not os.path.exists(path):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", "1", "-subj", "/CN=truenas-ca", "-keyout", path + ".key", "-out", path],
            capture_output=True,
            check=True,
        )
    return path


def check_tns_csi(label, binary, docs, workdir):
    for data in config_maps(docs):
        key = os.path.join(workdir, "api-key")
        with open(key, "w") as out:
            out.write("1-checkconfigkey")
        os.chmod(key, 0o400)
        for name, text in data.items():
            path = os.path.join(workdir, f"tns-csi-{label}-{name}")
            # Several systems: each key file where its Secret would be mounted, each CA where
            # its ConfigMap would be, moved under the work directory.
            secrets = os.path.join(workdir, "secrets")
            for system in re.findall(r"/var/run/secrets/tns-csi/([a-z0-9-]+)/api-key", text):
                os.makedirs(os.path.join(secrets, system), exist_ok=True)
                shutil.copyfile(key, os.path.join(secrets, system, "api-key"))
            for system in re.findall(r"/etc/tns-csi/ca/([a-z0-9-]+)/ca.crt", text):
                os.makedirs(os.path.join(workdir, "ca", system), exist_ok=True)
                shutil.copyfile(ca_bundle(workdir), os.path.join(workdir, "ca", system, "ca.crt"))
            text = re.sub(r"/var/run/secrets/tns-csi/([a-z0-9-]+)/", secrets + r"/\1/", text)
            text = re.sub(r"/etc/tns-csi/ca/([a-z0-9-]+)/", os.path.join(workdir, "ca") + r"/\1/", text)
            with open(path, "w") as out:
                out.write(text)
            # What the pod supplies: the URL from the Secret, the key file where the Secret is
            # mounted (elsewhere here), the node name from the downward API.
            env = dict(os.environ)
            if "\ntruenas:" in "\n" + text:
                env["TNS_CSI_TRUENAS__URL"] = "wss://truenas.example.com/api/current"
                env["TNS_CSI_TRUENAS__API_KEY_FILE"] = key
                if "ca_file:" in text:
                    env["TNS_CSI_TRUENAS__TLS__CA_FILE"] = ca_bundle(workdir)
            args = [binary, "check-config", "--config", path]
            if "mode: node" in text:
                args += ["--node-id", "worker-1"]
            result = subprocess.run(args, capture_output=True, text=True, env=env)
            if result.returncode != 0:
                fail(f"tns-csi [{label}] {name}: check-config refused it: {result.stderr.strip()}")
        os.remove(key)
    check_flags("tns-csi", label, binary, docs, "tns-csi")


def check_warpdrive(label, binary, docs, workdir):
    for data in config_maps(docs):
        text = data["warpdrive.yaml"]
        path = os.path.join(workdir, f"warpdrive-{label}.yaml")
        with open(path, "w") as out:
            out.write(text)
        config = yaml.safe_load(text)
        # The chart's host paths exist on a node, not here: give check-config directories of
        # its own for them, and a value for every credential env var the config names.
        mount = tempfile.mkdtemp(dir=workdir)
        cache = os.path.join(tempfile.mkdtemp(dir=workdir), "cache")
        env = dict(os.environ, WARPDRIVE_CACHE__PATH=cache)
        for backend in config.get("backends", []):
            auth = backend.get("auth") or {}
            for field, value in auth.items():
                if field.endswith("_env"):
                    env[value] = "checkconfig-value"
            # A projected token file exists in the pod, not here: stand one in.
            if "token_file" in auth:
                token = os.path.join(tempfile.mkdtemp(dir=workdir), "token")
                with open(token, "w") as out:
                    out.write("header.payload.signature")
                auth["token_file"] = token
        # So is the control plane's token, from its Secret.
        control = config.get("control_plane") or {}
        if control.get("token_file"):
            token = os.path.join(tempfile.mkdtemp(dir=workdir), "token")
            with open(token, "w") as out:
                out.write("checkconfig-token-0123456789abcdef")
            os.chmod(token, 0o600)
            control["token_file"] = token
        with open(path, "w") as out:
            yaml.safe_dump(config, out)
        result = subprocess.run(
            [binary, "check-config", "--config", path, "--mount-point", mount],
            capture_output=True,
            text=True,
            env=env,
        )
        if result.returncode != 0:
            fail(f"warpdrive [{label}]: check-config refused the rendered config: {result.stderr.strip()}")
    check_flags("warpdrive", label, binary, docs, "warpdrive-mount")


def deploy_text(chart, docs):
    parts = [DEPLOY_HEADER.format(chart=chart)]
    for source, doc in docs:
        parts.append(f"---\n# Source: {source}\n" + yaml.safe_dump(doc, sort_keys=False))
    return "".join(parts)


def rbac_text(docs):
    kinds = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    return deploy_text("tns-csi", [(s, d) for s, d in docs if d.get("kind") in kinds])


def check_deploy(rendered, write):
    wanted = {
        "deploy/tns-csi/tns-csi.yaml": deploy_text("tns-csi", rendered["tns-csi"]),
        "deploy/rbac.yaml": rbac_text(rendered["tns-csi"]),
        "deploy/warpdrive/warpdrive.yaml": deploy_text("warpdrive", rendered["warpdrive"]),
    }
    for rel, text in wanted.items():
        path = os.path.join(ROOT, rel)
        if write:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as out:
                out.write(text)
            print(f"   wrote {rel}", flush=True)
            continue
        current = open(path).read() if os.path.exists(path) else None
        if current != text:
            fail(f"{rel} differs from what the chart renders; run `cargo xtask charts --write`")
    result = subprocess.run(
        ["kubectl", "kustomize", os.path.join(ROOT, "deploy")], capture_output=True, text=True
    )
    if result.returncode != 0:
        fail(f"kubectl kustomize deploy/: {result.stderr.strip()}")
    else:
        kinds = [d["kind"] for d in yaml.safe_load_all(result.stdout) if d]
        print(f"   kubectl kustomize deploy/: {len(kinds)} objects", flush=True)


def check_systemd(binary, workdir):
    """deploy/systemd's unit passes `systemd-analyze verify` (unknown directives, bad values)."""
    source = os.path.join(ROOT, "deploy/systemd/warpdrive-mount.service")
    text = open(source).read().replace("/usr/local/bin/warpdrive-mount", os.path.abspath(binary))
    unit = os.path.join(workdir, "warpdrive-mount.service")
    with open(unit, "w") as out:
        out.write(text)
    result = subprocess.run(["systemd-analyze", "verify", unit], capture_output=True, text=True)
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        # The units it orders itself against need not exist on this machine.
        if line.strip() and "slurmd.service" not in line
    ]
    if result.returncode != 0 or problems:
        fail("deploy/systemd/warpdrive-mount.service: " + " | ".join(problems))
    else:
        print("   deploy/systemd/warpdrive-mount.service: systemd-analyze verify clean", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tns-csi", required=True)
    parser.add_argument("--warpdrive-mount", required=True)
    parser.add_argument("--write", action="store_true", help="regenerate deploy/ from the charts")
    args = parser.parse_args()
    binaries = {"tns-csi": args.tns_csi, "warpdrive": args.warpdrive_mount}
    checks = {"tns-csi": check_tns_csi, "warpdrive": check_warpdrive}
    rendered = {}
    with tempfile.TemporaryDirectory() as workdir:
        for chart in CHARTS:
            path = os.path.join(ROOT, "charts", chart)
            for version in KUBE_VERSIONS:
                report = helm_python.lint(path, strict=True, kube_version=f"v{version}")
                problems = [m for m in report["messages"] if m["severity"] >= 2] + [
                    {"error": e} for e in report["errors"]
                ]
                # `icon is recommended` is informational (severity 1) and not counted.
                for problem in problems:
                    fail(f"helm lint {chart} (Kubernetes {version}): {problem.get('path', '')} {problem['error']}")
            print(f"   helm lint {chart}: clean", flush=True)
            values_files = [("default", None)]
            ci_dir = os.path.join(path, "ci")
            if os.path.isdir(ci_dir):
                for name in sorted(os.listdir(ci_dir)):
                    if name.endswith("-values.yaml"):
                        values_files.append((name[: -len("-values.yaml")], os.path.join(ci_dir, name)))
            for label, values_path in values_files:
                values = yaml.safe_load(open(values_path)) if values_path else {}
                try:
                    docs = render(chart, values)
                except helm_python.HelmError as err:
                    fail(f"{chart} [{label}] does not render: {err}")
                    continue
                if label == "default":
                    rendered[chart] = docs
                validate(chart, label, docs, workdir)
                checks[chart](label, binaries[chart], docs, workdir)
        if len(rendered) == len(CHARTS):
            check_deploy(rendered, args.write)
        check_systemd(args.warpdrive_mount, workdir)
    if failures:
        print(f"==> charts: {len(failures)} problem(s)", flush=True)
        sys.exit(1)
    print("==> charts: both charts lint, render, validate and match their binaries", flush=True)


if __name__ == "__main__":
    main()
