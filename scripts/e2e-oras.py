"""End to end with ORAS (the oras-py client, https://oras.land): pushes artifacts to a writer,
monolithic and in 1 MiB PATCH chunks, with a directory packed as tar.gz and an artifact that
names the first as its subject; pulls them from a replica that follows the writer (blocks
fetched over Bitswap on demand) and compares every file byte for byte; lists and deletes tags.

usage: python3 scripts/e2e-oras.py path/to/ipns-registry    (run by scripts/e2e-oras.sh)
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import oras.client
import oras.oci

BIN = os.path.realpath(sys.argv[1] if len(sys.argv) > 1 else "target/release/ipns-registry")
PROCS = []


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def say(message):
    print(f"\n== {message}", flush=True)


def cli(data_dir, *args):
    return subprocess.run(
        [BIN, "--data-dir", data_dir, *args], check=True, capture_output=True, text=True
    ).stdout


def start(data_dir, *args):
    """Runs a node; returns (HTTP host:port, TCP p2p multiaddr)."""
    out = open(data_dir + ".out", "w")
    err = open(data_dir + ".err", "w")
    proc = subprocess.Popen(
        [BIN, "--data-dir", data_dir, "serve", "--listen", "127.0.0.1:0",
         "--p2p-listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", *args],
        stdout=out, stderr=err,
    )
    PROCS.append(proc)
    deadline = time.time() + 30
    while time.time() < deadline:
        http, p2p = None, None
        with open(data_dir + ".out") as lines:
            for line in lines:
                if line.startswith("listening on http://"):
                    http = line.strip()[len("listening on http://"):]
                if line.startswith("p2p listening on /ip4/127.0.0.1/tcp/"):
                    p2p = line.strip()[len("p2p listening on "):]
        if http and p2p:
            return http, p2p
        if proc.poll() is not None:
            fail(f"node exited: {open(data_dir + '.err').read()}")
        time.sleep(0.1)
    fail("node did not start")


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_digest(http, repo, tag):
    request = urllib.request.Request(
        f"http://{http}/v2/{repo}/manifests/{tag}",
        method="HEAD",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    try:
        with urllib.request.urlopen(request) as response:
            return response.headers.get("Docker-Content-Digest")
    except urllib.error.HTTPError:
        return None


def wait_for_tag(http, repo, tag, digest):
    for _ in range(300):
        if manifest_digest(http, repo, tag) == digest:
            return
        time.sleep(0.1)
    fail(f"{http} never served {repo}:{tag} as {digest}")


def main(work):
    os.chdir(work)  # oras-py takes file paths relative to the working directory
    writer_dir, replica_dir = os.path.join(work, "writer"), os.path.join(work, "replica")

    say("a writer and a replica that follows it")
    cli(writer_dir, "init", "--role", "writer")
    cli(replica_dir, "init", "--role", "replica")
    name = json.loads(cli(writer_dir, "id", "--json"))["ipns_name"]
    writer, writer_p2p = start(writer_dir)
    replica, _ = start(replica_dir, "--follow", name, "--peer", writer_p2p)
    print(f"writer http://{writer}, replica http://{replica}")
    to_writer = oras.client.OrasClient(hostname=writer, insecure=True)
    from_replica = oras.client.OrasClient(hostname=replica, insecure=True)

    say("oras push: a 5 MiB file in 1 MiB chunks, a text file and a directory (tar.gz)")
    os.makedirs("src/docs")
    with open("src/big.bin", "wb") as f:
        f.write(os.urandom(5 * 1024 * 1024 + 3))
    with open("src/notes.txt", "w") as f:
        f.write("pushed with oras-py\n")
    with open("src/docs/readme.md", "w") as f:
        f.write("# inside a directory\n")
    os.chdir("src")
    response = to_writer.push(
        target=f"{writer}/e2e/oras:v1",
        files=["big.bin", "notes.txt:text/plain", "docs"],
        do_chunked=True,
        chunk_size=1024 * 1024,
        quiet=True,
    )
    if response.status_code != 201:
        fail(f"chunked push answered {response.status_code}")
    v1 = manifest_digest(writer, "e2e/oras", "v1")
    if not v1:
        fail("the writer does not serve e2e/oras:v1")
    response = to_writer.push(
        target=f"{writer}/e2e/oras:v2", files=["notes.txt"], quiet=True
    )
    if response.status_code != 201:
        fail(f"monolithic push answered {response.status_code}")
    v2 = manifest_digest(writer, "e2e/oras", "v2")
    print(f"pushed v1 {v1} (chunked) and v2 {v2} (monolithic)")

    say("oras push of an artifact whose subject is v1 (referrers)")
    with urllib.request.urlopen(urllib.request.Request(
        f"http://{writer}/v2/e2e/oras/manifests/{v1}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )) as r:
        v1_size = len(r.read())
    subject = oras.oci.Subject(
        mediaType="application/vnd.oci.image.manifest.v1+json", digest=v1, size=v1_size
    )
    response = to_writer.push(
        target=f"{writer}/e2e/oras:v1-notes", files=["notes.txt"], subject=subject, quiet=True
    )
    if response.headers.get("OCI-Subject") != v1:
        fail(f"no OCI-Subject header on a manifest with a subject: {dict(response.headers)}")
    with urllib.request.urlopen(f"http://{writer}/v2/e2e/oras/referrers/{v1}") as r:
        referrers = json.load(r)["manifests"]
    if [m["digest"] for m in referrers] != [manifest_digest(writer, "e2e/oras", "v1-notes")]:
        fail(f"referrers of v1: {referrers}")
    print("the artifact is listed among v1's referrers")

    say("oras pull from the replica")
    wait_for_tag(replica, "e2e/oras", "v1-notes", manifest_digest(writer, "e2e/oras", "v1-notes"))
    out = os.path.join(work, "out")
    pulled = from_replica.pull(target=f"{replica}/e2e/oras:v1", outdir=out)
    names = sorted(os.path.relpath(p, out) for p in pulled)
    if names != ["big.bin", "docs", "notes.txt"]:
        fail(f"pulled {names}")
    for path in ["big.bin", "notes.txt", "docs/readme.md"]:
        if sha256_file(os.path.join(out, path)) != sha256_file(path):
            fail(f"{path} differs after the round trip")
    print("every file identical after oras push to the writer and pull from the replica")

    say("tags, and a deleted tag")
    tags = from_replica.get_tags(f"{replica}/e2e/oras")
    if sorted(tags) != ["v1", "v1-notes", "v2"]:
        fail(f"replica's tags: {tags}")
    if not to_writer.delete_tag(f"{writer}/e2e/oras", "v2"):
        fail("deleting v2 failed")
    for _ in range(300):
        if sorted(from_replica.get_tags(f"{replica}/e2e/oras")) == ["v1", "v1-notes"]:
            break
        time.sleep(0.1)
    else:
        fail("the replica still lists v2 after it was deleted on the writer")
    print("v2 deleted on the writer, gone from the replica")

    print("\ne2e-oras: 1 passed, 0 failed")


if __name__ == "__main__":
    work_dir = tempfile.mkdtemp()
    # oras-py pulls into directories of its own under the temp dir and never removes them
    tempfile.tempdir = work_dir
    try:
        main(work_dir)
    finally:
        for proc in PROCS:
            proc.kill()
            proc.wait()
        shutil.rmtree(work_dir, ignore_errors=True)
