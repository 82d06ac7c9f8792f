#!/usr/bin/env python3
"""Turn a root filesystem tarball into a one-layer container image archive.

    python3 scripts/oci_archive.py --rootfs target/image/rootfs.tar --dockerfile docker/Dockerfile \
        --stage final --name lightretriever:latest --out target/image/lightretriever-oci.tar

The image's configuration (ENV, LABEL, EXPOSE, VOLUME, WORKDIR, USER, STOPSIGNAL, HEALTHCHECK,
ENTRYPOINT, CMD) is read from the Dockerfile's stage `--stage`, so that the daemonless image and
`docker build -f docker/Dockerfile .` agree. Other instructions (RUN, COPY, ...) are the rootfs's
business (scripts/build_image.sh).

The output is an OCI image layout in a tar (oci-layout, index.json, blobs/sha256/...), loadable by
`podman load`, `skopeo copy oci-archive:...` and Docker >= 25, plus a Docker-style manifest.json
beside it (as `docker save` writes since 25) so that older `docker load` takes it too. The layer is
gzip'd (mtime 0); every timestamp is SOURCE_DATE_EPOCH (else now), so equal inputs give equal bytes.
HEALTHCHECK is kept as Docker keeps it, a `Healthcheck` object in the config (OCI has no such
field; Docker honours it, and so does Podman for images it loads in Docker format).
"""

import argparse
import hashlib
import io
import json
import os
import platform
import re
import shlex
import sys
import tarfile
import tempfile
import time
import zlib

ARCH = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64", "ppc64le": "ppc64le", "s390x": "s390x"}


def duration_ns(text):
    """Docker's durations as HEALTHCHECK takes them: 30s, 1m30s, 500ms, 2h."""
    total, pos = 0.0, 0
    unit = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)", text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * unit[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        sys.exit(f"oci_archive: bad duration {text!r}")
    return int(round(total * 1e9))


def exec_form(rest):
    """JSON array form, else the shell form as Docker runs it."""
    rest = rest.strip()
    if rest.startswith("["):
        return json.loads(rest)
    return ["/bin/sh", "-c", rest]


def stage_instructions(dockerfile, stage):
    """(INSTRUCTION, arguments) of one stage, continuation lines joined, comments dropped."""
    lines, cur = [], ""
    for raw in open(dockerfile, encoding="utf-8"):
        line = raw.rstrip("\n")
        if not cur and line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            cur += line[:-1] + " "
            continue
        cur += line
        if cur.strip():
            lines.append(cur.strip())
        cur = ""
    out, inside = [], False
    for line in lines:
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            inside = bool(re.search(r"\s+AS\s+" + re.escape(stage) + r"\s*$", line, re.I))
            continue
        if inside:
            out.append((word, rest.strip()))
    if not out:
        sys.exit(f"oci_archive: no stage {stage!r} in {dockerfile}")
    return out


def image_config(dockerfile, stage):
    cfg = {}
    for word, rest in stage_instructions(dockerfile, stage):
        if word == "ENV":
            parts = shlex.split(rest)
            if "=" not in parts[0]:  # legacy `ENV KEY value`
                parts = [parts[0] + "=" + " ".join(parts[1:])]
            env = cfg.setdefault("Env", [])
            for p in parts:
                key = p.split("=", 1)[0]
                env[:] = [e for e in env if e.split("=", 1)[0] != key] + [p]
        elif word == "LABEL":
            for p in shlex.split(rest):
                k, _, v = p.partition("=")
                cfg.setdefault("Labels", {})[k] = v
        elif word == "EXPOSE":
            for p in rest.split():
                cfg.setdefault("ExposedPorts", {})[p if "/" in p else p + "/tcp"] = {}
        elif word == "VOLUME":
            vols = json.loads(rest) if rest.startswith("[") else rest.split()
            for v in vols:
                cfg.setdefault("Volumes", {})[v] = {}
        elif word == "WORKDIR":
            cfg["WorkingDir"] = rest
        elif word == "USER":
            cfg["User"] = rest
        elif word == "STOPSIGNAL":
            cfg["StopSignal"] = rest
        elif word == "ENTRYPOINT":
            cfg["Entrypoint"] = exec_form(rest)
        elif word == "CMD":
            cfg["Cmd"] = exec_form(rest)
        elif word == "HEALTHCHECK":
            opts, _, cmd = rest.partition("CMD")
            if rest.strip().upper() == "NONE":
                cfg["Healthcheck"] = {"Test": ["NONE"]}
                continue
            hc = {}
            cmd = cmd.strip()
            hc["Test"] = ["CMD"] + json.loads(cmd) if cmd.startswith("[") else ["CMD-SHELL", cmd]
            for o in opts.split():
                k, _, v = o.lstrip("-").partition("=")
                if k == "retries":
                    hc["Retries"] = int(v)
                elif k in ("interval", "timeout", "start-period", "start-interval"):
                    hc[{"interval": "Interval", "timeout": "Timeout", "start-period": "StartPeriod",
                        "start-interval": "StartInterval"}[k]] = duration_ns(v)
                else:
                    sys.exit(f"oci_archive: unknown HEALTHCHECK option {o}")
            cfg["Healthcheck"] = hc
    if not any(e.startswith("PATH=") for e in cfg.get("Env", [])):
        cfg.setdefault("Env", []).insert(0, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    return cfg


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rootfs", required=True, help="uncompressed tarball of the root filesystem")
    ap.add_argument("--dockerfile", required=True)
    ap.add_argument("--stage", default="final")
    ap.add_argument("--name", default="lightretriever:latest", help="repository:tag")
    ap.add_argument("--created-by", default="scripts/build_image.sh")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", time.time()))
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
    repo, _, tag = args.name.rpartition(":")
    if not repo or "/" in tag:
        repo, tag = args.name, "latest"
    out_dir = os.path.dirname(os.path.abspath(args.out))

    with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".layer-", delete=True) as layer:
        # The layer: gzip (no name, mtime 0) while hashing both sides.
        diff, digest = hashlib.sha256(), hashlib.sha256()
        z = zlib.compressobj(6, zlib.DEFLATED, 31)
        with open(args.rootfs, "rb") as src:
            while True:
                chunk = src.read(1 << 20)
                if not chunk:
                    break
                diff.update(chunk)
                c = z.compress(chunk)
                digest.update(c)
                layer.write(c)
        c = z.flush()
        digest.update(c)
        layer.write(c)
        layer.flush()
        layer_size = layer.tell()
        layer_digest = "sha256:" + digest.hexdigest()

        config = {
            "created": created,
            "architecture": ARCH.get(platform.machine(), platform.machine()),
            "os": "linux",
            "config": image_config(args.dockerfile, args.stage),
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + diff.hexdigest()]},
            "history": [{"created": created, "created_by": args.created_by}],
        }
        config_bytes = canonical(config)
        config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                       "size": len(config_bytes)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest,
                        "size": layer_size}],
        }
        manifest_bytes = canonical(manifest)
        manifest_digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
        full = repo if "/" in repo else "docker.io/library/" + repo
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
                "size": len(manifest_bytes),
                "platform": {"architecture": config["architecture"], "os": "linux"},
                "annotations": {"org.opencontainers.image.ref.name": f"{repo}:{tag}",
                                "io.containerd.image.name": f"{full}:{tag}"},
            }],
        }
        blob = lambda d: "blobs/sha256/" + d.split(":", 1)[1]
        docker_manifest = [{"Config": blob(config_digest), "RepoTags": [f"{repo}:{tag}"], "Layers": [blob(layer_digest)]}]

        tmp_out = args.out + ".tmp"
        with tarfile.open(tmp_out, "w", format=tarfile.PAX_FORMAT) as tar:
            def add(name, data=None, fileobj=None, size=None, mode=0o644, kind=tarfile.REGTYPE):
                ti = tarfile.TarInfo(name)
                ti.mtime, ti.mode, ti.type, ti.uid, ti.gid, ti.uname, ti.gname = epoch, mode, kind, 0, 0, "", ""
                if kind == tarfile.DIRTYPE:
                    tar.addfile(ti)
                elif data is not None:
                    ti.size = len(data)
                    tar.addfile(ti, io.BytesIO(data))
                else:
                    ti.size = size
                    tar.addfile(ti, fileobj)
            add("blobs", mode=0o755, kind=tarfile.DIRTYPE)
            add("blobs/sha256", mode=0o755, kind=tarfile.DIRTYPE)
            add("oci-layout", canonical({"imageLayoutVersion": "1.0.0"}))
            add("index.json", canonical(index))
            add("manifest.json", canonical(docker_manifest))
            add(blob(config_digest), config_bytes)
            add(blob(manifest_digest), manifest_bytes)
            layer.seek(0)
            add(blob(layer_digest), fileobj=layer, size=layer_size)
        os.replace(tmp_out, args.out)
    print(f"{args.out}: {repo}:{tag}, manifest {manifest_digest}, layer {layer_size / 2**20:.0f} MiB gzip "
          f"({os.path.getsize(args.rootfs) / 2**20:.0f} MiB uncompressed)")


if __name__ == "__main__":
    main()
