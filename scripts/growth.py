#!/usr/bin/env python3
"""Commit cost as a registry grows (issue 11), for any OCI registry.

Pushes N tiny one-layer images (unique bytes each) into N repositories, then N more into one
repository under N tags, over one keep-alive HTTP connection (standard library only), and reports
the median latency of the first and the last 100 of each phase, and their ratio: flat cost gives
1.0. Each image is two blob uploads (POST, then PUT with the digest) and a manifest PUT; the
manifest PUT is the figure, the whole image is reported too.

usage: scripts/growth.py URL [--images N] [--window W] [--json PATH] [--label NAME]
"""

import argparse
import hashlib
import http.client
import json
import os
import statistics
import sys
import time
import urllib.parse


class Registry:
    def __init__(self, url):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise SystemExit(f"not an http:// URL: {url}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)

    def request(self, method, path, body=None, headers=None):
        self.conn.request(method, path, body=body, headers=headers or {})
        response = self.conn.getresponse()
        data = response.read()
        return response.status, response.headers, data

    def upload_blob(self, repo, data):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        status, headers, body = self.request("POST", f"/v2/{repo}/blobs/uploads/")
        if status != 202:
            raise SystemExit(f"POST upload to {repo}: {status} {body[:200]!r}")
        location = urllib.parse.urlsplit(headers["Location"])
        path = location.path + ("?" + location.query if location.query else "")
        separator = "&" if location.query else "?"
        status, _, body = self.request(
            "PUT",
            f"{path}{separator}digest={digest}",
            body=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        if status != 201:
            raise SystemExit(f"PUT blob to {repo}: {status} {body[:200]!r}")
        return digest

    def push_tiny(self, repo, tag, n):
        """Pushes one tiny image; returns (manifest PUT seconds, whole image seconds)."""
        started = time.perf_counter()
        layer = os.urandom(1024)
        layer_digest = self.upload_blob(repo, layer)
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
                "config": {"Labels": {"n": str(n)}},
            },
            separators=(",", ":"),
        ).encode()
        config_digest = self.upload_blob(repo, config)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config_digest,
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest,
                        "size": len(layer),
                    }
                ],
            },
            separators=(",", ":"),
        ).encode()
        put_started = time.perf_counter()
        status, _, body = self.request(
            "PUT",
            f"/v2/{repo}/manifests/{tag}",
            body=manifest,
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        )
        done = time.perf_counter()
        if status != 201:
            raise SystemExit(f"PUT manifest {repo}:{tag}: {status} {body[:200]!r}")
        return done - put_started, done - started


def summary(name, manifest_times, image_times, window):
    first, last = manifest_times[:window], manifest_times[-window:]
    first_image, last_image = image_times[:window], image_times[-window:]
    result = {
        "phase": name,
        "images": len(manifest_times),
        "window": window,
        "manifest_put_first_ms": 1000 * statistics.median(first),
        "manifest_put_last_ms": 1000 * statistics.median(last),
        "image_first_ms": 1000 * statistics.median(first_image),
        "image_last_ms": 1000 * statistics.median(last_image),
    }
    result["manifest_put_last_over_first"] = (
        result["manifest_put_last_ms"] / result["manifest_put_first_ms"]
    )
    result["image_last_over_first"] = result["image_last_ms"] / result["image_first_ms"]
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the registry, e.g. http://127.0.0.1:5000")
    parser.add_argument("--images", type=int, default=5000, help="images per phase (default 5000)")
    parser.add_argument("--window", type=int, default=100, help="first/last images compared (default 100)")
    parser.add_argument("--json", help="write the results here as JSON")
    parser.add_argument("--label", default="registry", help="name in progress lines")
    args = parser.parse_args()
    if args.images < 2 * args.window or args.window < 1:
        raise SystemExit("--images must be at least twice --window")

    registry = Registry(args.url)
    results = []
    phases = [
        ("repositories", lambda i: (f"growth/r{i:05d}", "v1")),
        ("tags", lambda i: ("growth/tags", f"t{i:05d}")),
    ]
    for name, target in phases:
        manifest_times, image_times = [], []
        started = time.monotonic()
        for i in range(args.images):
            repo, tag = target(i)
            put, whole = registry.push_tiny(repo, tag, f"{name}-{i}")
            manifest_times.append(put)
            image_times.append(whole)
            if (i + 1) % 500 == 0 or i + 1 == args.images:
                print(
                    f"[growth {args.label}] {name}: {i + 1}/{args.images}, "
                    f"{time.monotonic() - started:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
        results.append(summary(name, manifest_times, image_times, args.window))

    for r in results:
        print(
            f"{r['phase']}: {r['images']} images, manifest PUT median first {r['window']} "
            f"{r['manifest_put_first_ms']:.2f} ms, last {r['window']} "
            f"{r['manifest_put_last_ms']:.2f} ms ({r['manifest_put_last_over_first']:.2f}x); "
            f"whole image {r['image_first_ms']:.2f} -> {r['image_last_ms']:.2f} ms "
            f"({r['image_last_over_first']:.2f}x)"
        )
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
