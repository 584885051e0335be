#!/usr/bin/env python3
"""The client, sampler and report of benchmarks/soak (see that script for the whole picture).

    soak.py images DIR COUNT SEED MIN_MIB MAX_MIB     deterministic image files + manifest.json
    soak.py upload GLANCE_URL TOKEN DIR               one Glance image per file, one at a time
    soak.py run --depot URL --pid PID ... --out JSON  warm-up, soak, samples, verdict data
    soak.py report JSON OUT.md [--chart OUT.png]      Markdown (and chart); exit 1 on failure

Stdlib only, except `report --chart`, which needs matplotlib (benchmarks/work/venv).

Traffic: CLIENTS clients (threads spread over PROCS processes), each with its own keep-alive
connection and its own seeded random stream, pick an image by a Zipf law over the images
(a seeded permutation, so popularity is not size) and one operation from MIX. Every answer is
checked: status, Content-Length, Content-Range, ETag (the SHA-512, as Glance's os_hash_value), Content-MD5
(Glance's checksum, when sent), and the body (SHA-256 of whole images, byte comparison against
the local copy for ranges). Any 5xx is a failure (a budget with no room streams the image from
Glance without a copy, X-Depot-Cache: bypass, rather than 507), as is any unexpected status,
short body, reset or wrong byte.
"""
import argparse
import bisect
import hashlib
import http.client
import json
import multiprocessing
import os
import queue
import random
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

MiB = 1 << 20

# Operation weights (per request). "abort" reads part of a whole image and drops the
# connection (a client gone mid-transfer); "denied" uses a token of another project (Glance
# hides the private image: 404); "unsat" asks for a range past the end (416).
MIX = {
    "get": 18, "range": 38, "suffix": 8, "open": 4, "multi": 4, "head": 12,
    "cond": 9, "abort": 3, "denied": 2, "unsat": 2,
}
READERS = [f"soak{k}:projA:member,reader" for k in range(8)]
OUTSIDER = "mallory:projB:member,reader"
CHUNK = MiB


# ---------------------------------------------------------------- images

def cmd_images(args):
    os.makedirs(args.dir, exist_ok=True)
    manifest_path = os.path.join(args.dir, "manifest.json")
    old = {}
    if os.path.exists(manifest_path):
        old = {e["file"]: e for e in json.load(open(manifest_path))["images"]}
    rng = random.Random(f"soak-sizes-{args.seed}")
    entries = []
    for i in range(args.count):
        # Sizes not aligned to anything, so last-byte and last-chunk edges get exercised.
        size = rng.randint(args.min_mib * MiB, args.max_mib * MiB) + rng.randint(1, 4095)
        name = f"img-{i:02d}.bin"
        path = os.path.join(args.dir, name)
        prev = old.get(name)
        if prev and prev["size"] == size and os.path.exists(path) and os.path.getsize(path) == size \
                and prev.get("seed") == args.seed and "sha512" in prev:
            entries.append(prev)
            continue
        print(f"+ generating {path} ({size} bytes)", file=sys.stderr)
        sha256, sha512, md5 = hashlib.sha256(), hashlib.sha512(), hashlib.md5()
        # AES-CTR keystream: fast, deterministic from the seed, incompressible.
        gen = subprocess.Popen(
            ["openssl", "enc", "-aes-128-ctr", "-pass", f"pass:depot-soak-{args.seed}-{i}", "-nosalt", "-pbkdf2"],
            stdin=open("/dev/zero", "rb"), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        left = size
        with open(path + ".part", "wb") as out:
            while left:
                block = gen.stdout.read(min(left, 4 * MiB))
                if not block:
                    raise SystemExit("openssl ended early")
                sha256.update(block)
                sha512.update(block)
                md5.update(block)
                out.write(block)
                left -= len(block)
        gen.kill()
        gen.wait()
        os.replace(path + ".part", path)
        entries.append({"file": name, "size": size, "sha256": sha256.hexdigest(), "sha512": sha512.hexdigest(), "md5": md5.hexdigest(),
                        "seed": args.seed})
    with open(manifest_path + ".part", "w") as f:
        json.dump({"images": entries}, f, indent=1)
    os.replace(manifest_path + ".part", manifest_path)
    print(f"{len(entries)} images, {sum(e['size'] for e in entries)} bytes in {args.dir}", file=sys.stderr)


def glance_call(method, url, token, body=None, headers=None, timeout=600):
    req = urllib.request.Request(url, data=body, method=method)
    req.add_header("X-Auth-Token", token)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, resp.read()


def cmd_upload(args):
    """Creates one image per manifest entry and uploads its file: one at a time (Glance on
    SQLite refuses concurrent writes with 500 "database is locked"), retried a few times."""
    manifest = json.load(open(os.path.join(args.dir, "manifest.json")))["images"]
    out = []
    t0 = time.time()
    for n, entry in enumerate(manifest):
        body = json.dumps({"name": f"soak-{n:02d}", "disk_format": "raw", "container_format": "bare"}).encode()
        for attempt in range(5):
            try:
                _, created = glance_call("POST", args.glance + "/v2/images", args.token, body, {"Content-Type": "application/json"})
                image_id = json.loads(created)["id"]
                with open(os.path.join(args.dir, entry["file"]), "rb") as f:
                    req = urllib.request.Request(args.glance + f"/v2/images/{image_id}/file", data=f, method="PUT")
                    req.add_header("X-Auth-Token", args.token)
                    req.add_header("Content-Type", "application/octet-stream")
                    req.add_header("Content-Length", str(entry["size"]))
                    with urllib.request.urlopen(req, timeout=600) as resp:
                        resp.read()
                _, shown = glance_call("GET", args.glance + f"/v2/images/{image_id}", args.token)
                shown = json.loads(shown)
                if shown["status"] != "active" or shown["size"] != entry["size"] or shown["checksum"] != entry["md5"]:
                    raise RuntimeError(f"Glance shows {shown['status']}, size {shown['size']}, checksum {shown['checksum']}")
                break
            except Exception as e:  # noqa: BLE001 - retried, then fatal
                print(f"upload {entry['file']} attempt {attempt + 1}: {e}", file=sys.stderr)
                if attempt == 4:
                    raise
                time.sleep(2)
        out.append(dict(entry, id=image_id, path=os.path.join(args.dir, entry["file"])))
    json.dump({"images": out}, open(args.out, "w"), indent=1)
    print(f"uploaded {len(out)} images in {time.time() - t0:.0f} s", file=sys.stderr)


# ---------------------------------------------------------------- traffic

class Failure(Exception):
    pass


class Client:
    def __init__(self, cid, cfg, images, counters, deadline):
        self.cid = cid
        self.cfg = cfg
        self.images = images
        self.counters = counters  # RawArray: [requests, bytes] per client
        self.deadline = deadline
        self.rng = random.Random(f"{cfg['seed']}-{cfg['phase']}-{cid}")
        self.token = READERS[cid % len(READERS)]
        self.conn = None
        self.answered = None  # the status of the answer being read, for error reports
        self.buf = bytearray(CHUNK)
        self.fds = {}
        self.stats = {"status": {}, "op_status": {}, "cache": {}, "bytes": 0, "requests": 0,
                      "lat": {}, "errors": [], "n507": [], "aborted": 0}
        ranks = list(range(len(images)))
        random.Random(f"soak-popularity-{cfg['seed']}").shuffle(ranks)
        self.by_rank = ranks
        weights = [1.0 / (r + 1) ** cfg["zipf"] for r in range(len(images))]
        self.cum = [sum(weights[:i + 1]) for i in range(len(weights))]
        ops = list(MIX.items())
        self.ops = [o for o, _ in ops]
        self.op_cum = [sum(w for _, w in ops[:i + 1]) for i in range(len(ops))]

    def pick(self):
        r = bisect.bisect_left(self.cum, self.rng.random() * self.cum[-1])
        img = self.images[self.by_rank[min(r, len(self.images) - 1)]]
        op = self.ops[bisect.bisect_left(self.op_cum, self.rng.random() * self.op_cum[-1])]
        return img, op

    def connect(self):
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.cfg["host"], self.cfg["port"], timeout=self.cfg["timeout"])
        return self.conn

    def drop(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def local(self, img, start, count):
        fd = self.fds.get(img["id"])
        if fd is None:
            fd = self.fds[img["id"]] = os.open(img["path"], os.O_RDONLY)
        return os.pread(fd, count, start)

    def run(self):
        while time.monotonic() < self.deadline:
            img, op = self.pick()
            t0 = time.monotonic()
            status, cache, self.answered = None, None, None
            try:
                status, cache, _ = self.request(img, op)
            except Failure as e:
                self.error(op, img, self.answered, str(e))
                self.drop()
            except (OSError, http.client.HTTPException) as e:
                self.error(op, img, self.answered, f"{type(e).__name__}: {e}")
                self.drop()
            except Exception as e:  # noqa: BLE001 - a bug here must not end the client
                self.error(op, img, self.answered, f"client error {type(e).__name__}: {e}")
                self.drop()
            dt = time.monotonic() - t0
            if status is None:
                status = self.answered  # failed after an answer came: count it by its status
            key = str(status) if status is not None else "no answer"
            self.stats["status"][key] = self.stats["status"].get(key, 0) + 1
            ok = f"{op} {key}"
            self.stats["op_status"][ok] = self.stats["op_status"].get(ok, 0) + 1
            if cache:
                ck = f"{op} {cache}"
                self.stats["cache"][ck] = self.stats["cache"].get(ck, 0) + 1
            self.stats["lat"].setdefault(op, []).append(round(dt, 4))
            self.stats["requests"] += 1
            self.counters[2 * self.cid] += 1
        self.drop()
        for fd in self.fds.values():
            os.close(fd)
        return self.stats

    def error(self, op, img, status, message):
        self.stats["errors"].append({"t": round(time.time(), 3), "client": self.cid, "op": op, "image": img["id"],
                                     "status": status, "error": message[:400]})

    def add_bytes(self, n):
        self.stats["bytes"] += n
        self.counters[2 * self.cid + 1] += n

    def send(self, method, img, headers, token=None):
        conn = self.connect()
        h = {"X-Auth-Token": token or self.token}
        h.update(headers)
        conn.request(method, f"/v2/images/{img['id']}/file", headers=h)
        resp = conn.getresponse()
        self.answered = resp.status
        return resp

    def check_common(self, resp, img):
        etag = resp.getheader("ETag")
        if etag is not None and etag.strip('"') != img["sha512"] and etag != f'W/"{img["sha512"]}"':
            raise Failure(f"ETag {etag} is not the image's SHA-512 {img['sha512']}")
        md5 = resp.getheader("Content-MD5")
        if md5 is not None and md5 != img["md5"]:
            raise Failure(f"Content-MD5 {md5} is not Glance's checksum {img['md5']}")

    def read_all(self, resp, limit):
        data = resp.read()
        if len(data) > limit:
            raise Failure(f"body of {len(data)} bytes, more than {limit}")
        self.add_bytes(len(data))
        return data

    def expect_range(self, resp, img, start, end):
        size = img["size"]
        want = f"bytes {start}-{end}/{size}"
        got = resp.getheader("Content-Range")
        if got != want:
            raise Failure(f"Content-Range {got!r}, expected {want!r}")
        count = end - start + 1
        if resp.getheader("Content-Length") != str(count):
            raise Failure(f"Content-Length {resp.getheader('Content-Length')} for a {count}-byte range")
        data = self.read_all(resp, count)
        if len(data) != count:
            raise Failure(f"range {start}-{end}: {len(data)} bytes, expected {count}")
        expected = self.local(img, start, count)
        if data != expected:
            at = next((i for i in range(min(len(data), len(expected))) if data[i] != expected[i]), min(len(data), len(expected)))
            raise Failure(f"range {start}-{end}: wrong byte at offset {start + at}")

    def expect_whole(self, resp, img, op):
        size = img["size"]
        if resp.getheader("Content-Length") != str(size):
            raise Failure(f"Content-Length {resp.getheader('Content-Length')}, image is {size}")
        h = hashlib.sha256()
        total = 0
        mv = memoryview(self.buf)
        while True:
            n = resp.readinto(mv)
            if not n:
                break
            h.update(mv[:n])
            total += n
            self.add_bytes(n)
        if total != size:
            raise Failure(f"{total} of {size} bytes")
        if h.hexdigest() != img["sha256"]:
            raise Failure(f"SHA-256 {h.hexdigest()} of the body, image is {img['sha256']}")

    def other(self, resp, img, op):
        """A status no operation expects: a failure (507s are also sampled for the report)."""
        body = resp.read()[:300].decode("utf-8", "replace")
        if resp.status == 507 and len(self.stats["n507"]) < 20:
            self.stats["n507"].append({"t": round(time.time(), 3), "op": op, "image": img["id"], "body": body})
        raise Failure(f"unexpected status {resp.status}: {body}")

    def request(self, img, op):
        rng, size = self.rng, img["size"]
        if op == "head":
            resp = self.send("HEAD", img, {})
            resp.read()
            if resp.status != 200:
                self.other(resp, img, op)
                return resp.status, resp.getheader("X-Depot-Cache"), 0
            self.check_common(resp, img)
            if resp.getheader("Content-Length") != str(size):
                raise Failure(f"HEAD Content-Length {resp.getheader('Content-Length')}, image is {size}")
            return 200, resp.getheader("X-Depot-Cache"), 0
        if op == "denied":
            resp = self.send("GET", img, {"Range": "bytes=0-1023"}, token=OUTSIDER)
            body = resp.read()
            if resp.status not in (403, 404):
                raise Failure(f"another project's token got {resp.status} ({len(body)} bytes) for a private image")
            return resp.status, None, 0
        if op == "unsat":
            resp = self.send("GET", img, {"Range": f"bytes={size + rng.randint(0, 1000)}-"})
            resp.read()
            if resp.status != 416:
                if resp.status >= 500:
                    self.other(resp, img, op)
                raise Failure(f"range past the end answered {resp.status}, expected 416")
            if resp.getheader("Content-Range") != f"bytes */{size}":
                raise Failure(f"416 with Content-Range {resp.getheader('Content-Range')!r}")
            return 416, resp.getheader("X-Depot-Cache"), 0
        if op in ("get", "abort"):
            resp = self.send("GET", img, {})
            cache = resp.getheader("X-Depot-Cache")
            if resp.status != 200:
                self.other(resp, img, op)
                return resp.status, cache, 0
            self.check_common(resp, img)
            if op == "abort":
                want = rng.randint(64 << 10, 8 * MiB)
                got = 0
                mv = memoryview(self.buf)
                while got < want:
                    n = resp.readinto(mv[:min(CHUNK, want - got)])
                    if not n:
                        break
                    if mv[:n] != self.local(img, got, n):
                        raise Failure(f"wrong bytes within the first {got + n} bytes")
                    got += n
                    self.add_bytes(n)
                self.stats["aborted"] += 1
                self.drop()  # the client goes away mid-body
                return 200, cache, got
            self.expect_whole(resp, img, op)
            return 200, cache, size
        if op == "cond":
            if rng.random() < 0.7:
                # The ETag the client knows (the SHA-512): 304, on a hit as on a miss.
                resp = self.send("GET", img, {"If-None-Match": f'"{img["sha512"]}"'})
                cache = resp.getheader("X-Depot-Cache")
                if resp.status == 304:
                    resp.read()
                    self.check_common(resp, img)
                    return 304, cache, 0
                if resp.status == 200:
                    self.check_common(resp, img)
                    if resp.getheader("ETag") is not None:
                        raise Failure("200 with the matching ETag: If-None-Match ignored")
                    self.expect_whole(resp, img, op)
                    return 200, cache, size
                self.other(resp, img, op)
                return resp.status, cache, 0
            # A stale ETag and a range: the range is served.
            count = min(size, rng.randint(1, 1 * MiB))
            start = rng.randint(0, size - count)
            resp = self.send("GET", img, {"If-None-Match": '"' + "0" * 64 + '"', "Range": f"bytes={start}-{start + count - 1}"})
            cache = resp.getheader("X-Depot-Cache")
            if resp.status != 206:
                self.other(resp, img, op)
                return resp.status, cache, 0
            self.check_common(resp, img)
            self.expect_range(resp, img, start, start + count - 1)
            return 206, cache, count
        if op == "multi":
            n = rng.randint(2, 4)
            cuts = sorted(rng.sample(range(size), 2 * n))
            ranges = []
            for i in range(n):
                a, b = cuts[2 * i], cuts[2 * i + 1]
                b = min(b, a + rng.randint(0, 512 << 10))
                if ranges and a <= ranges[-1][1] + 1:
                    continue  # would be coalesced; keep them apart
                ranges.append((a, b))
            if len(ranges) < 2:
                op = "range"
            else:
                resp = self.send("GET", img, {"Range": "bytes=" + ",".join(f"{a}-{b}" for a, b in ranges)})
                cache = resp.getheader("X-Depot-Cache")
                if resp.status != 206:
                    self.other(resp, img, op)
                    return resp.status, cache, 0
                self.check_common(resp, img)
                ctype = resp.getheader("Content-Type", "")
                m = re.match(r"multipart/byteranges;\s*boundary=(\S+)", ctype)
                if not m:
                    raise Failure(f"{len(ranges)} ranges answered with Content-Type {ctype!r}")
                body = self.read_all(resp, sum(b - a + 1 for a, b in ranges) + 400 * len(ranges) + 200)
                if resp.getheader("Content-Length") != str(len(body)):
                    raise Failure(f"multipart body of {len(body)} bytes, Content-Length {resp.getheader('Content-Length')}")
                self.check_multipart(body, m.group(1).encode(), img, ranges)
                return 206, cache, len(body)
        if op == "range":
            # Mostly small, sometimes a few MiB (log-uniform).
            count = min(size, int(2 ** rng.uniform(0, 23)))
            start = rng.randint(0, size - count)
            end = start + count - 1
            hdr = f"bytes={start}-{end}"
        elif op == "suffix":
            count = min(size, int(2 ** rng.uniform(0, 22)))
            start, end = size - count, size - 1
            hdr = f"bytes=-{count}"
        else:  # open: bytes=a- near the end
            count = rng.randint(1, 4 * MiB)
            start, end = size - count, size - 1
            hdr = f"bytes={start}-"
        resp = self.send("GET", img, {"Range": hdr})
        cache = resp.getheader("X-Depot-Cache")
        if resp.status != 206:
            self.other(resp, img, op)
            return resp.status, cache, 0
        self.check_common(resp, img)
        self.expect_range(resp, img, start, end)
        return 206, cache, count

    def check_multipart(self, body, boundary, img, ranges):
        pos = 0
        for a, b in ranges:
            marker = b"\r\n--" + boundary + b"\r\n" if pos or body.startswith(b"\r\n") else b"--" + boundary + b"\r\n"
            i = body.find(marker, pos)
            if i != pos:
                raise Failure(f"multipart: no boundary at {pos}")
            j = body.find(b"\r\n\r\n", i + len(marker))
            heads = body[i + len(marker):j].decode("latin-1")
            cr = re.search(r"(?im)^content-range:\s*bytes (\d+)-(\d+)/(\d+)\s*$", heads)
            if not cr or (int(cr.group(1)), int(cr.group(2)), int(cr.group(3))) != (a, b, img["size"]):
                raise Failure(f"multipart part headers {heads!r}, expected bytes {a}-{b}/{img['size']}")
            data = body[j + 4:j + 4 + (b - a + 1)]
            if data != self.local(img, a, b - a + 1):
                raise Failure(f"multipart part {a}-{b}: wrong bytes")
            pos = j + 4 + (b - a + 1)
        if body[pos:] != b"\r\n--" + boundary + b"--\r\n":
            raise Failure(f"multipart: bad closing {body[pos:pos + 80]!r}")


def worker(proc, cids, cfg, images, counters, deadline_wall, results):
    deadline = time.monotonic() + (deadline_wall - time.time())
    clients = [Client(c, cfg, images, counters, deadline) for c in cids]
    out = [None] * len(clients)

    def go(i):
        try:
            out[i] = clients[i].run()
        except Exception as e:  # noqa: BLE001 - a bug in the client is a failure too
            st = clients[i].stats
            st["errors"].append({"t": time.time(), "client": clients[i].cid, "op": "client", "image": "",
                                 "status": None, "error": f"client crashed: {type(e).__name__}: {e}"})
            out[i] = st

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.put((proc, out))


def merge(stats_list):
    total = {"status": {}, "op_status": {}, "cache": {}, "bytes": 0, "requests": 0, "lat": {}, "errors": [],
             "n507": [], "aborted": 0}
    for st in stats_list:
        for k in ("status", "op_status", "cache"):
            for key, v in st[k].items():
                total[k][key] = total[k].get(key, 0) + v
        for op, lats in st["lat"].items():
            total["lat"].setdefault(op, []).extend(lats)
        for k in ("bytes", "requests", "aborted"):
            total[k] += st[k]
        total["errors"].extend(st["errors"])
        total["n507"].extend(st["n507"])
    total["errors"].sort(key=lambda e: e["t"])
    lat = {}
    for op, v in total["lat"].items():
        v.sort()
        lat[op] = {"n": len(v), "p50": v[len(v) // 2], "p99": v[min(len(v) - 1, int(len(v) * 0.99))], "max": v[-1]}
    total["lat"] = lat
    return total


# ---------------------------------------------------------------- sampling

def tcp_table(pid):
    """inode -> (local port, remote port) for the process's TCP sockets (IPv4 and IPv6)."""
    table = {}
    for name in ("tcp", "tcp6"):
        try:
            lines = open(f"/proc/{pid}/net/{name}").read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            local, remote, inode = parts[1], parts[2], parts[9]
            table[inode] = (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16), parts[3])
    return table


def unix_inodes(pid):
    """Inodes of Unix-domain sockets (libcurl keeps a socketpair per easy handle's multi)."""
    try:
        return {line.split()[6] for line in open(f"/proc/{pid}/net/unix").read().splitlines()[1:] if len(line.split()) > 6}
    except OSError:
        return set()


def sample(pid, data_dir, depot_port, glance_port):
    s = {"t": time.time()}
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            s["rss_kib"] = int(line.split()[1])
        elif line.startswith("Threads:"):
            s["threads"] = int(line.split()[1])
    stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    s["cpu_s"] = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    kinds = {"blob": 0, "blob_deleted": 0, "tmp": 0, "catalog": 0, "client_sock": 0, "backend_sock": 0, "unix_sock": 0, "other_sock": 0, "other": 0}
    tcp = unix = None
    fds = 0
    fd_dir = f"/proc/{pid}/fd"
    for name in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{name}")
        except OSError:
            continue
        fds += 1
        if target.startswith(data_dir + "/blobs/"):
            kinds["blob"] += 1
            # An evicted blob still held open keeps its blocks allocated: a leak.
            if target.endswith(" (deleted)"):
                kinds["blob_deleted"] += 1
        elif target.startswith(data_dir + "/tmp/"):
            kinds["tmp"] += 1
        elif target.startswith(data_dir + "/catalog"):
            kinds["catalog"] += 1
        elif target.startswith("socket:["):
            if tcp is None:
                tcp = tcp_table(pid)
            inode = target[8:-1]
            ports = tcp.get(inode)
            if ports and ports[0] == depot_port and ports[1] != 0:
                kinds["client_sock"] += 1
            elif ports and ports[1] == glance_port:
                kinds["backend_sock"] += 1
            else:
                if unix is None:
                    unix = unix_inodes(pid)
                kinds["unix_sock" if inode in unix else "other_sock"] += 1
        else:
            kinds["other"] += 1
    s["fds"] = fds
    s.update({f"fd_{k}": v for k, v in kinds.items()})
    # tmp/ before blobs/, each file once by inode: a commit links the temporary file into
    # blobs/ before it unlinks it (one inode, two names), and an eviction deletes a blob before
    # the fill that needed the room creates its temporary file. Walked in this order, neither
    # is counted twice; summing names would count bytes that are not on disk twice.
    disk = {"tmp": 0, "blobs": 0}
    seen = set()
    for sub in disk:
        for root, _, files in os.walk(os.path.join(data_dir, sub)):
            for f in files:
                try:
                    st = os.stat(os.path.join(root, f))
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
                disk[sub] += st.st_size
    s["disk_blobs"], s["disk_tmp"] = disk["blobs"], disk["tmp"]
    return s


def metrics(url):
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=30) as resp:
            text = resp.read().decode()
    except OSError as e:
        return {"error": str(e)}
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith("depot_"):
            continue
        key, _, value = line.rpartition(" ")
        try:
            out[key] = float(value)
        except ValueError:
            pass
    return out


def run_phase(name, cfg, images, seconds, sampler):
    """Runs CLIENTS clients for `seconds`; returns merged stats (the sampler keeps sampling)."""
    cfg = dict(cfg, phase=name)
    clients, procs = cfg["clients"], cfg["procs"]
    # Spawned, not forked: the sampler thread runs in this process.
    ctx = multiprocessing.get_context("spawn")
    counters = ctx.RawArray("q", 2 * clients)
    sampler.counters = counters
    deadline = time.time() + seconds
    results = ctx.Queue()
    groups = [list(range(p, clients, procs)) for p in range(procs)]
    ps = [ctx.Process(target=worker, args=(p, g, cfg, images, counters, deadline, results)) for p, g in enumerate(groups)]
    for p in ps:
        p.start()
    got, lost = {}, []
    while len(got) + len(lost) < len(ps):
        try:
            proc, sts = results.get(timeout=5)
            got[proc] = sts
        except queue.Empty:
            for i, p in enumerate(ps):
                if i not in got and i not in lost and p.exitcode not in (None, 0):
                    lost.append(i)
    for p in ps:
        p.join()
    sampler.counters = None
    merged = merge([st for sts in got.values() for st in sts if st is not None])
    for i in lost:
        merged["errors"].append({"t": time.time(), "client": -1, "op": "client", "image": "", "status": None,
                                 "error": f"client process {i} died with exit code {ps[i].exitcode}"})
    return merged


class Sampler(threading.Thread):
    def __init__(self, cfg, every):
        super().__init__(daemon=True)
        self.cfg, self.every = cfg, every
        self.rows, self.phase, self.counters = [], "idle", None
        self.stop = threading.Event()
        self.base = (0, 0)  # requests, bytes so far in earlier phases
        self.t0 = time.time()
        self.max_used = 0

    def once(self):
        s = sample(self.cfg["pid"], self.cfg["data_dir"], self.cfg["port"], self.cfg["glance_port"])
        c = self.counters
        reqs = sum(c[0::2]) if c is not None else 0
        byts = sum(c[1::2]) if c is not None else 0
        s.update({"phase": self.phase, "elapsed": round(s["t"] - self.t0, 2), "requests": reqs, "bytes": byts})
        # No HTTP request while waiting for Depot to go idle: it would be a client socket.
        m = metrics(self.cfg["url"]) if self.phase != "quiesce" else {}
        s["cache_used"] = int(m["depot_cache_used_bytes"]) if "depot_cache_used_bytes" in m else None
        self.rows.append(s)
        return s

    def run(self):
        while not self.stop.is_set():
            try:
                self.once()
            except (OSError, ValueError) as e:
                print(f"sample failed: {e}", file=sys.stderr)
            self.stop.wait(self.every)


def quiesce(cfg, limit=90):
    """Waits until Depot holds no client connection and no fill (tmp file) and its fd count
    has not changed for 5 s; returns the last sample and how long it took."""
    t0 = time.time()
    last, stable_since = None, time.time()
    while True:
        s = sample(cfg["pid"], cfg["data_dir"], cfg["port"], cfg["glance_port"])
        if last is None or s["fds"] != last["fds"]:
            stable_since = time.time()
        last = s
        # Depot's open-file cache keeps up to OPEN_BLOBS readers of live blobs between hits (as
        # nginx's open_file_cache does); a deleted blob held open, or more than that, is not idle.
        quiet = (s["fd_client_sock"] == 0 and s["fd_tmp"] == 0 and s["fd_blob_deleted"] == 0
                 and s["fd_blob"] <= OPEN_BLOBS)
        if quiet and time.time() - stable_since >= 5:
            return s, time.time() - t0, True
        if time.time() - t0 > limit:
            return s, time.time() - t0, False
        time.sleep(0.5)


# BlobStore's open-file cache capacity (Sources/BlobStore: OpenBlobCache, 128 readers).
OPEN_BLOBS = 128


def rss_parts(pid):
    out = {}
    for line in open(f"/proc/{pid}/smaps_rollup"):
        k, _, v = line.partition(":")
        if k in ("Rss", "Pss_Anon"):
            out[k] = int(v.split()[0])
    return out


def trim_probe(pid):
    """After the end sample: how much of the idle RSS is memory glibc keeps after free (its
    arenas) rather than live data. Asks the process, through gdb, to malloc_trim(0)."""
    gdb = shutil.which("gdb")
    if not gdb:
        return {"error": "gdb not installed"}
    before = rss_parts(pid)
    try:
        done = subprocess.run([gdb, "-p", str(pid), "-batch", "-nx", "-ex", "call (int)malloc_trim(0)"],
                              capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"error": str(e)}
    if done.returncode != 0 or "$1" not in done.stdout:
        return {"error": (done.stderr or done.stdout).strip()[-300:]}
    return {"before": before, "after": rss_parts(pid)}


def cmd_run(args):
    images = json.load(open(args.images))["images"]
    url = urllib.parse.urlsplit(args.depot)
    cfg = {"host": url.hostname, "port": url.port, "url": args.depot, "pid": args.pid, "data_dir": os.path.realpath(args.data_dir),
           "glance_port": args.glance_port, "seed": args.seed, "zipf": args.zipf, "timeout": args.timeout,
           "clients": args.clients, "procs": args.procs}
    result = {"config": {k: v for k, v in vars(args).items()}, "images": [{k: e[k] for k in ("id", "size", "sha256")} for e in images],
              "mix": MIX, "readers": READERS, "outsider": OUTSIDER}
    sampler = Sampler(cfg, args.sample_every)
    result["fresh"] = sample(cfg["pid"], cfg["data_dir"], cfg["port"], cfg["glance_port"])
    result["metrics_fresh"] = metrics(args.depot)
    sampler.start()

    print(f"+ warm-up: {args.clients} clients for {args.warmup} s", file=sys.stderr)
    sampler.phase = "warmup"
    result["warmup"] = run_phase("warmup", cfg, images, args.warmup, sampler)
    sampler.phase = "quiesce"
    result["baseline"], result["baseline_wait"], result["baseline_quiet"] = quiesce(cfg)
    result["metrics_start"] = metrics(args.depot)

    print(f"+ soak: {args.clients} clients for {args.duration} s", file=sys.stderr)
    sampler.phase = "soak"
    result["soak_started"] = time.time()
    result["soak"] = run_phase("soak", cfg, images, args.duration, sampler)
    result["soak_ended"] = time.time()
    sampler.phase = "quiesce"
    result["end"], result["end_wait"], result["end_quiet"] = quiesce(cfg)
    result["metrics_end"] = metrics(args.depot)
    sampler.stop.set()
    sampler.join()
    result["trim"] = trim_probe(cfg["pid"]) if args.trim_probe else None
    result["samples"] = sampler.rows
    json.dump(result, open(args.out, "w"), indent=1)
    s = result["soak"]
    print(f"soak: {s['requests']} requests, {s['bytes'] / 1e9:.2f} GB, statuses {s['status']}, {len(s['errors'])} error(s)", file=sys.stderr)


# ---------------------------------------------------------------- report

def median(v):
    return statistics.median(v) if v else 0


def cmd_report(args):
    r = json.load(open(args.json))
    extra = json.load(open(args.extra)) if args.extra else {}
    cfg = r["config"]
    soak, warm = r["soak"], r["warmup"]
    samples = r["samples"]
    t0 = r["soak_started"]
    dur = r["soak_ended"] - t0
    rows = [s for s in samples if s["phase"] == "soak" and t0 <= s["t"] <= r["soak_ended"] + 0.5]
    window = 60.0 if cfg["duration"] >= 240 else cfg["duration"] / 4
    first = [s for s in rows if s["t"] - t0 <= window]
    last = [s for s in rows if s["t"] >= r["soak_ended"] - window]
    rss_first = median([s["rss_kib"] for s in first]) / 1024
    rss_last = median([s["rss_kib"] for s in last]) / 1024
    rss_growth = rss_last - rss_first
    rss_limit = max(args.rss_slack_mib, rss_first * args.rss_slack_pct / 100)
    base, end = r["baseline"], r["end"]
    # Depot's transfer loop keeps idle connections to Glance for reuse (CURLMOPT_MAXCONNECTS,
    # 64), and its multi handle a socketpair for wakeups. They are bounded reuse, not leaks:
    # counted apart and checked against that capacity.
    def pooled(s):
        return s["fd_backend_sock"] + s.get("fd_unix_sock", 0)
    base_fd = base["fds"] - pooled(base)
    end_fd = end["fds"] - pooled(end)
    budget = cfg["cache_bytes"]
    max_disk = max([s["disk_blobs"] + s["disk_tmp"] for s in samples] or [0])
    max_used = max([s.get("cache_used") or 0 for s in samples] or [0])

    failures = []
    n5xx = {k: v for st in (warm, soak) for k, v in st["status"].items() if k.startswith("5")}
    if n5xx:
        failures.append(f"5xx answers: {n5xx}")
    errs = warm["errors"] + soak["errors"]
    if errs:
        failures.append(f"{len(errs)} failed request(s): wrong bytes or headers, unexpected status, short body or transport error (listed below)")
    trim = r.get("trim") or {}
    trimmed = (f"; idle after the soak it was {trim['before']['Rss'] / 1024:.0f} MiB, {trim['after']['Rss'] / 1024:.0f} MiB after "
               f"malloc_trim(0) (anonymous {trim['after']['Pss_Anon'] / 1024:.0f} MiB): see Memory") if "after" in trim else ""
    if rss_growth > rss_limit:
        failures.append(f"RSS grew {rss_growth:.1f} MiB between the first and last {window:.0f} s (limit {rss_limit:.1f} MiB){trimmed}")
    if end_fd > base_fd + args.fd_slack:
        failures.append(f"open fds (without libcurl's pooled sockets) {end_fd} at the end vs {base_fd} at the warm baseline (slack {args.fd_slack})")
    if end["fd_backend_sock"] > args.backend_fd_max:
        failures.append(f"{end['fd_backend_sock']} idle connections to Glance at the end (pool capacity {args.backend_fd_max})")
    if end.get("fd_unix_sock", 0) > r["fresh"].get("fd_unix_sock", 0) + 2 * args.backend_fd_max:
        failures.append(f"{end['fd_unix_sock']} Unix sockets at the end: more than libcurl's pooled handles account for ({r['fresh'].get('fd_unix_sock', 0)} + 2 x {args.backend_fd_max})")
    if not r["baseline_quiet"]:
        failures.append(f"Depot did not go quiet after the warm-up: {base['fd_client_sock']} client sockets, {base['fd_blob']} blob files (kept by the open-file cache at most {OPEN_BLOBS}; {base['fd_blob_deleted']} of them deleted) and {base['fd_tmp']} temp files still open after {r['baseline_wait']:.0f} s")
    if not r["end_quiet"]:
        failures.append(f"Depot did not go quiet after the clients left: {end['fd_client_sock']} client sockets, {end['fd_blob']} blob files (kept by the open-file cache at most {OPEN_BLOBS}; {end['fd_blob_deleted']} of them deleted) and {end['fd_tmp']} temp files still open after {r['end_wait']:.0f} s")
    if max_disk > budget:
        failures.append(f"blobs + temp files reached {max_disk} bytes on disk, above the {budget}-byte budget")
    fsck = extra.get("fsck")
    fsck_problems = {k: v for k, v in (fsck or {}).items()
                     if k in ("corrupt", "rows_without_file", "files_without_row", "stray_files", "pending_pushes_lost") and v}
    if fsck is None and extra.get("fsck_error"):
        failures.append(f"depot fsck failed: {extra['fsck_error'][:300]}")
    if fsck_problems:
        failures.append(f"depot fsck after the soak is not clean: {json.dumps(fsck_problems)[:300]}")
    if extra.get("depot_exit") not in (None, 0):
        failures.append(f"Depot exited with {extra.get('depot_exit')} when stopped")
    if soak["requests"] == 0:
        failures.append("no request completed")

    L = []
    p = L.append
    p(f"# benchmarks/soak {cfg['duration']:.0f}")
    p("")
    p(f"{cfg['clients']} clients on loopback ({cfg['procs']} processes) for {dur:.0f} s against Depot with a "
      f"{budget / 2**30:.2f} GiB cache budget and {len(r['images'])} images ({sum(i['size'] for i in r['images']) / 2**30:.2f} GiB) "
      f"in a real Glance; {cfg['warmup']:.0f} s warm-up first. {os.cpu_count()} cores, {os.uname().release}, "
      f"{time.strftime('%Y-%m-%d', time.gmtime(t0))}, seed {cfg['seed']}, Zipf s={cfg['zipf']}.")
    p("")
    p(f"**Result: {'FAIL' if failures else 'PASS'}**" + ("" if not failures else ""))
    for f in failures:
        p(f"- {f}")
    p("")
    p("Pass criteria: no 5xx; every answer's status, headers and bytes as expected; "
      f"RSS median of the last {window:.0f} s at most max({args.rss_slack_mib} MiB, {args.rss_slack_pct}%) above that of the first {window:.0f} s; "
      f"open fds after the soak, once Depot is idle, at most {args.fd_slack} above the warm baseline (idle after the warm-up), "
      f"not counting libcurl's kept-alive connections to Glance and its wakeup socketpair, "
      f"which must stay within the transfer loop's capacity ({args.backend_fd_max} idle connections); "
      "no client socket, blob or temp file open once idle; blobs on disk within the budget; `depot fsck` clean after the run.")
    p("")
    p("## Requests")
    p("")
    rate = soak["requests"] / dur if dur else 0
    p(f"{soak['requests']} requests in {dur:.0f} s ({rate:.1f}/s), {soak['bytes'] / 1e9:.2f} GB of body bytes "
      f"({soak['bytes'] / dur / 1e6:.0f} MB/s), {soak['aborted']} downloads dropped by the client on purpose. "
      f"Warm-up: {warm['requests']} requests, {warm['bytes'] / 1e9:.2f} GB, statuses {json.dumps(warm['status'], sort_keys=True)}.")
    p("")
    p("| status | count |")
    p("|---|---|")
    for k, v in sorted(soak["status"].items()):
        p(f"| {k} | {v} |")
    p("")
    n507 = soak["status"].get("507", 0) + warm["status"].get("507", 0)
    p(f"Failed checks: {len(soak['errors'])} in the soak, {len(warm['errors'])} in the warm-up (each counted above under the status it got; "
      f"'no answer' is a reset or timeout before any status). 5xx, warm-up included: {sum(n5xx.values())}"
      f"{' (each one is in the list of failed requests below)' if n5xx else ''}; 507: {n507}." + (" 507 samples: " + "; ".join(
        f"{e['op']} {e['image'][:8]}: {e['body'][:260]}" for e in (warm['n507'] + soak['n507'])[:5]) if n507 else ""))
    p("")
    p("| operation | weight | requests | statuses | X-Depot-Cache | latency p50 | p99 | max |")
    p("|---|---|---|---|---|---|---|---|")
    for op, w in r["mix"].items():
        st = {k.split(" ", 1)[1]: v for k, v in soak["op_status"].items() if k.split(" ", 1)[0] == op}
        ca = {k.split(" ", 1)[1]: v for k, v in soak["cache"].items() if k.split(" ", 1)[0] == op}
        lat = soak["lat"].get(op, {"n": 0, "p50": 0, "p99": 0, "max": 0})
        p(f"| {op} | {w} | {lat['n']} | {', '.join(f'{k}: {v}' for k, v in sorted(st.items()))} | "
          f"{', '.join(f'{k}: {v}' for k, v in sorted(ca.items()))} | {lat['p50']:.3f} s | {lat['p99']:.3f} s | {lat['max']:.3f} s |")
    p("")
    p("get: whole image, SHA-256 checked; range: `bytes=a-b` (1 B-8 MiB, log-uniform); suffix: `bytes=-n`; open: `bytes=a-` near the end; "
      "multi: 2-4 disjoint ranges (multipart/byteranges parsed); head: HEAD; cond: `If-None-Match` with the image's ETag, its SHA-512 (304, on a hit "
      "as on a miss) or, 30%, a stale ETag with a range (206); abort: a whole GET dropped after 64 KiB-8 MiB; "
      "denied: a token of another project (404 expected); unsat: a range past the end (416). Ranges compared byte for byte with the local copy.")
    p("")
    if errs:
        p(f"### Failed requests ({len(errs)}; first 50; time from the start of the soak, negative in the warm-up)")
        p("")
        p("| time | client | op | image | status | error |")
        p("|---|---|---|---|---|---|")
        for e in errs[:50]:
            p(f"| +{e['t'] - r['soak_started']:.1f} s | {e['client']} | {e['op']} | {e['image'][:8]} | {e['status']} | {e['error'].replace('|', '/')} |")
        p("")

    p("## Memory and file descriptors")
    p("")
    rss_all = [s["rss_kib"] / 1024 for s in rows]
    fd_all = [s["fds"] for s in rows]
    p("| | RSS | fds (all) | fds without pooled curl sockets | Glance connections | Unix sockets (curl) | blob files open | threads |")
    p("|---|---|---|---|---|---|---|---|")
    for label, s in (("fresh (before any request)", r["fresh"]), ("warm baseline (idle after warm-up)", base),
                     ("end (idle after the soak)", end)):
        p(f"| {label} | {s['rss_kib'] / 1024:.1f} MiB | {s['fds']} | {s['fds'] - pooled(s)} | {s['fd_backend_sock']} | {s.get('fd_unix_sock', '')} | {s['fd_blob']} | {s.get('threads', '')} |")
    if rows:
        for label, s in (("soak: first sample", rows[0]), ("soak: last sample", rows[-1])):
            p(f"| {label} | {s['rss_kib'] / 1024:.1f} MiB | {s['fds']} | {s['fds'] - pooled(s)} | {s['fd_backend_sock']} | {s.get('fd_unix_sock', '')} | {s['fd_blob']} | {s.get('threads', '')} |")
        p(f"| soak: max | {max(rss_all):.1f} MiB | {max(fd_all)} | {max(s['fds'] - pooled(s) for s in rows)} | {max(s['fd_backend_sock'] for s in rows)} | "
          f"{max(s.get('fd_unix_sock', 0) for s in rows)} | {max(s['fd_blob'] for s in rows)} | {max(s.get('threads', 0) for s in rows)} |")
        p(f"| soak: median of first {window:.0f} s / last {window:.0f} s | {rss_first:.1f} / {rss_last:.1f} MiB (growth {rss_growth:+.1f}, limit {rss_limit:.1f}) | "
          f"{median([s['fds'] for s in first]):.0f} / {median([s['fds'] for s in last]):.0f} | | | | | |")
    p("")
    if "after" in trim:
        p(f"Idle after the soak, Depot's RSS was {trim['before']['Rss'] / 1024:.1f} MiB (anonymous {trim['before']['Pss_Anon'] / 1024:.1f} MiB); "
          f"after `malloc_trim(0)` (called through gdb, after every measurement above) {trim['after']['Rss'] / 1024:.1f} MiB "
          f"(anonymous {trim['after']['Pss_Anon'] / 1024:.1f} MiB). What the trim returns is memory glibc kept in its arenas after "
          "it was freed, not live data: a large drop with a small remainder points at allocator retention, a large remainder at a leak.")
        p("")
    elif trim.get("error"):
        p(f"(No malloc_trim probe: {trim['error']}.)")
        p("")
    p(f"Idle waits: {r['baseline_wait']:.1f} s after the warm-up, {r['end_wait']:.1f} s after the soak. Depot CPU time: "
      f"{end['cpu_s'] - base['cpu_s']:.0f} s during the soak. Cache budget {budget} bytes; most bytes on disk (blobs + temp) {max_disk} "
      f"({max_disk / budget * 100:.1f}%), highest `depot_cache_used_bytes` {max_used} ({max_used / budget * 100:.1f}%).")
    p("")
    if args.chart_name:
        p(f"![RSS, fds and traffic over time]({args.chart_name})")
        p("")
    every = max(1, len(samples) // 40)
    p(f"Curve ({'every sample' if every == 1 else f'one sample in {every}'}, {len(samples)} in all, every {cfg['sample_every']:g} s; all in `{args.csv_name}`):")
    p("")
    p("| t (s) | phase | RSS MiB | fds | client sockets | Glance sockets | Unix sockets | blob fds | tmp fds | threads | req/s | MB/s | blobs on disk MiB |")
    p("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    step = max(1, len(samples) // 40)
    prev = None
    for i, s in enumerate(samples):
        if i % step and i != len(samples) - 1:
            prev = s
            continue
        rq = bw = 0.0
        if prev and prev["phase"] == s["phase"] and s["t"] > prev["t"]:
            rq = (s["requests"] - prev["requests"]) / (s["t"] - prev["t"])
            bw = (s["bytes"] - prev["bytes"]) / (s["t"] - prev["t"]) / 1e6
        p(f"| {s['elapsed']:.0f} | {s['phase']} | {s['rss_kib'] / 1024:.1f} | {s['fds']} | {s['fd_client_sock']} | {s['fd_backend_sock']} | {s.get('fd_unix_sock', '')} | "
          f"{s['fd_blob']} | {s['fd_tmp']} | {s.get('threads', '')} | {rq:.1f} | {bw:.0f} | {s['disk_blobs'] / MiB:.0f} |")
        prev = s
    p("")

    p("## Depot's /metrics (soak only: end minus start)")
    p("")
    ms, me = r["metrics_start"], r["metrics_end"]
    p("| metric | start | end | delta |")
    p("|---|---|---|---|")
    keys = sorted(k for k in me if (k.split("{")[0].endswith("_total") or k.startswith("depot_cache_used_bytes"))
                  and "duration" not in k)
    for k in keys:
        a, b = ms.get(k, 0), me.get(k, 0)
        if a == b == 0:
            continue
        p(f"| `{k}` | {a:.0f} | {b:.0f} | {b - a:+.0f} |")
    p("")
    if extra.get("cache_stats"):
        p("`depot cache stats` at the end:")
        p("")
        p("```")
        p(extra["cache_stats"].rstrip())
        p("```")
        p("")
    if fsck is not None:
        p(f"`depot fsck --dry-run` after the soak (Depot stopped): {'NOT clean: ' + json.dumps(fsck_problems) if fsck_problems else 'clean'}, "
          f"{fsck.get('blobs_checked', '?')} blobs, {fsck.get('bytes_checked', 0)} bytes checked, "
          f"{fsck.get('temporary_files_removed', 0)} temporary file(s) left over.")
        p("")
    if extra and not extra.get("depot_log"):
        p("Depot logged nothing at warning level or above.")
        p("")
    if extra.get("depot_log"):
        p(f"Depot's log at warning level and above ({extra.get('depot_log_lines', 0)} lines; first 20):")
        p("")
        p("```")
        p(extra["depot_log"].rstrip())
        p("```")
        p("")
    p("## Commands")
    p("")
    p(f"`DEPOT_BIN={cfg.get('depot_bin', 'depot')} benchmarks/soak {cfg['duration']:.0f}` (CLIENTS={cfg['clients']}, "
      f"WARMUP={cfg['warmup']:.0f}, SAMPLE_EVERY={cfg['sample_every']:g}, SEED={cfg['seed']}); Depot: `depot serve --listen 127.0.0.1:0 "
      f"--cache-size {cfg['cache_size']} --glance-url GLANCE --service-token 'depot:service:admin,member,reader' --admin-token T "
      "--log-level warning`; Glance: `scripts/glance-dev start` (fakeauth, SQLite, file store). Samples: VmRSS and Threads from "
      "/proc/PID/status, /proc/PID/fd classified by readlink and /proc/PID/net/tcp, blob bytes from the data directory, "
      "`depot_cache_used_bytes` from /metrics.")

    with open(args.out, "w") as f:
        f.write("\n".join(L) + "\n")
    if args.csv:
        cols = ["elapsed", "phase", "rss_kib", "fds", "fd_client_sock", "fd_backend_sock", "fd_unix_sock", "fd_other_sock", "fd_blob", "fd_blob_deleted", "fd_tmp",
                "fd_catalog", "fd_other", "threads", "cpu_s", "requests", "bytes", "disk_blobs", "disk_tmp", "cache_used"]
        with open(args.csv, "w") as f:
            f.write(",".join(cols) + "\n")
            for s in samples:
                f.write(",".join("" if s.get(c) is None else str(s[c]) for c in cols) + "\n")
    if args.chart:
        chart(samples, r, args.chart, budget)
    for f in failures:
        print(f"FAIL: {f}", file=sys.stderr)
    sys.exit(1 if failures else 0)


def chart(samples, r, out, budget):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    t0 = samples[0]["t"]
    t = [s["t"] - t0 for s in samples]
    fig, axes = plt.subplots(4, 1, figsize=(11, 11), sharex=True)
    axes[0].plot(t, [s["rss_kib"] / 1024 for s in samples], color="#2b6cb0")
    axes[0].set_ylabel("RSS (MiB)")
    axes[0].set_ylim(bottom=0)
    axes[1].plot(t, [s["fds"] for s in samples], label="all fds", color="#2b6cb0")
    axes[1].plot(t, [s["fd_client_sock"] for s in samples], label="client sockets", color="#38a169")
    axes[1].plot(t, [s["fd_backend_sock"] for s in samples], label="Glance sockets", color="#dd6b20")
    axes[1].plot(t, [s.get("fd_unix_sock", 0) for s in samples], label="Unix sockets (libcurl)", color="#a0aec0")
    axes[1].plot(t, [s["fd_blob"] + s["fd_tmp"] for s in samples], label="blob + temp files", color="#805ad5")
    axes[1].set_ylabel("open fds")
    axes[1].legend(loc="upper left", fontsize=8)
    rate, bw, tt = [], [], []
    for a, b in zip(samples, samples[1:]):
        if a["phase"] == b["phase"] and b["t"] > a["t"]:
            tt.append(b["t"] - t0)
            rate.append((b["requests"] - a["requests"]) / (b["t"] - a["t"]))
            bw.append((b["bytes"] - a["bytes"]) / (b["t"] - a["t"]) / 1e6)
    axes[2].plot(tt, bw, color="#2b6cb0", label="MB/s received by clients")
    axes[2].set_ylabel("MB/s")
    ax2 = axes[2].twinx()
    ax2.plot(tt, rate, color="#38a169", label="requests/s")
    ax2.set_ylabel("requests/s")
    axes[2].legend(loc="upper left", fontsize=8)
    ax2.legend(loc="upper right", fontsize=8)
    axes[3].plot(t, [s["disk_blobs"] / budget * 100 for s in samples], color="#2b6cb0", label="blobs on disk")
    axes[3].plot(t, [(s["disk_blobs"] + s["disk_tmp"]) / budget * 100 for s in samples], color="#dd6b20", label="blobs + fills in progress")
    used = [(tt_, s["cache_used"] / budget * 100) for tt_, s in zip(t, samples) if s.get("cache_used") is not None]
    axes[3].plot([u[0] for u in used], [u[1] for u in used], color="#38a169", label="depot_cache_used_bytes", linestyle="--", marker=".")
    axes[3].set_ylabel("% of the cache budget")
    axes[3].set_ylim(0, 110)
    axes[3].legend(loc="upper left", fontsize=8)
    axes[3].set_xlabel("seconds")
    for ax in axes:
        ax.axvspan(r["soak_started"] - t0, r["soak_ended"] - t0, color="#edf2f7", zorder=0)
    fig.suptitle(f"benchmarks/soak: {r['config']['clients']} clients, shaded: the soak (warm-up before)")
    fig.tight_layout()
    fig.savefig(out, dpi=90)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("images")
    a.add_argument("dir")
    a.add_argument("count", type=int)
    a.add_argument("seed", type=int)
    a.add_argument("min_mib", type=int)
    a.add_argument("max_mib", type=int)
    a = sub.add_parser("upload")
    a.add_argument("glance")
    a.add_argument("token")
    a.add_argument("dir")
    a.add_argument("--out", required=True)
    a = sub.add_parser("run")
    a.add_argument("--depot", required=True)
    a.add_argument("--pid", type=int, required=True)
    a.add_argument("--data-dir", required=True)
    a.add_argument("--glance-port", type=int, required=True)
    a.add_argument("--images", required=True)
    a.add_argument("--out", required=True)
    a.add_argument("--clients", type=int, default=64)
    a.add_argument("--procs", type=int, default=2)
    a.add_argument("--duration", type=float, default=600)
    a.add_argument("--warmup", type=float, default=20)
    a.add_argument("--sample-every", type=float, default=2)
    a.add_argument("--seed", type=int, default=1)
    a.add_argument("--zipf", type=float, default=1.0)
    a.add_argument("--timeout", type=float, default=300)
    a.add_argument("--cache-size", default="2GiB")
    a.add_argument("--cache-bytes", type=int, required=True)
    a.add_argument("--depot-bin", default="depot")
    a.add_argument("--trim-probe", type=int, default=1)
    a = sub.add_parser("report")
    a.add_argument("json")
    a.add_argument("out")
    a.add_argument("--extra")
    a.add_argument("--csv")
    a.add_argument("--csv-name", default="soak.csv")
    a.add_argument("--chart")
    a.add_argument("--chart-name")
    a.add_argument("--rss-slack-mib", type=float, default=32)
    a.add_argument("--rss-slack-pct", type=float, default=20)
    a.add_argument("--fd-slack", type=int, default=8)
    a.add_argument("--backend-fd-max", type=int, default=64)
    args = ap.parse_args()
    {"images": cmd_images, "upload": cmd_upload, "run": cmd_run, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    main()
