# Shared helpers for the benchmark scripts (sourced, not run).
# Needs: ROOT (repository root), SIZE_MIB, WORK.
#
# A measurement either succeeds or stops its benchmark: a command that fails, an HTTP status
# other than 2xx, or fewer bytes than expected is reported on stderr and returns non-zero
# (scripts run with `set -euo pipefail`, so `x=$(measure ...)` ends the script). A failure is
# never a fast time. Throughput is computed from the bytes actually moved (curl's
# size_download or size_upload), in MB/s (10^6 bytes per second).

# build_depot: release build, as scripts/setup makes it (the Swift runtime linked in); sets DEPOT
# to the binary. DEPOT_BIN=PATH uses that binary instead (to compare two builds in one session).
build_depot() {
  if [ -n "${DEPOT_BIN:-}" ]; then DEPOT=$DEPOT_BIN; echo "+ using DEPOT_BIN=$DEPOT" >&2; return; fi
  echo "+ swift build -c release --static-swift-stdlib --product depot" >&2
  (cd "$ROOT" && swift build -c release --static-swift-stdlib --product depot >&2)
  DEPOT="$(cd "$ROOT" && swift build -c release --show-bin-path)/depot"
}

# build_floor: release build of depot-nio-floor, linked as build_depot links depot: the least a
# range hit costs on Depot's engine (Sources/depot-nio-floor/main.swift); sets FLOOR_BIN to the
# binary. DEPOT_FLOOR_BIN=PATH uses that binary; with DEPOT_BIN, the depot-nio-floor beside it,
# when there is one.
build_floor() {
  if [ -n "${DEPOT_FLOOR_BIN:-}" ]; then FLOOR_BIN=$DEPOT_FLOOR_BIN; echo "+ using DEPOT_FLOOR_BIN=$FLOOR_BIN" >&2; return; fi
  if [ -n "${DEPOT_BIN:-}" ] && [ -x "$(dirname "$DEPOT_BIN")/depot-nio-floor" ]; then
    FLOOR_BIN=$(dirname "$DEPOT_BIN")/depot-nio-floor; echo "+ using $FLOOR_BIN (beside DEPOT_BIN)" >&2; return
  fi
  echo "+ swift build -c release --static-swift-stdlib --product depot-nio-floor" >&2
  (cd "$ROOT" && swift build -c release --static-swift-stdlib --product depot-nio-floor >&2)
  FLOOR_BIN="$(cd "$ROOT" && swift build -c release --show-bin-path)/depot-nio-floor"
}

# listening_url FILE [TENTHS]: the URL a server (depot, depot-nio-floor) printed to FILE as
# "NAME listening on URL", waiting up to TENTHS tenths of a second (default 100) for the line;
# empty when none came.
listening_url() {
  local i
  for ((i = 0; i < ${2:-100}; i++)); do grep -q ' listening on ' "$1" 2>/dev/null && break; sleep 0.1; done
  sed -n '/ listening on /{s/^.* listening on //p;q}' "$1" 2>/dev/null || true
}

# make_input: a SIZE_MIB file of pseudo-random bytes in WORK (reused across runs), warm in the
# page cache; sets INPUT.
make_input() {
  mkdir -p "$WORK"
  INPUT="$WORK/input-${SIZE_MIB}MiB.bin"
  if [ ! -f "$INPUT" ] || [ "$(stat -c %s "$INPUT")" -ne $((SIZE_MIB << 20)) ]; then
    echo "+ generating $INPUT ($SIZE_MIB MiB of pseudo-random bytes)" >&2
    # openssl dies of SIGPIPE when head has enough; that is the plan, not a failure.
    { openssl enc -aes-128-ctr -pass pass:depot-bench -nosalt -pbkdf2 </dev/zero 2>/dev/null || true; } \
      | head -c $((SIZE_MIB << 20)) >"$INPUT"
  fi
  cat "$INPUT" >/dev/null
}

now_ns() { date +%s%N; }

measure_failed() { echo "measurement failed: $*" >&2; return 1; }

# time_cmd PREP CMD...: runs PREP (untimed, via eval), syncs, then prints the seconds CMD took.
# When CMD fails, prints nothing, says why on stderr and returns CMD's status.
time_cmd() {
  local prep=$1; shift
  eval "$prep"
  sync
  local t0 t1 rc=0 err
  err=$(mktemp "${TMPDIR:-/tmp}/depot-bench-err.XXXXXX")
  t0=$(now_ns); "$@" >/dev/null 2>"$err" || rc=$?; t1=$(now_ns)
  if [ "$rc" -ne 0 ]; then
    measure_failed "\`$*\` exited $rc: $(tail -c 400 "$err")" || true
    rm -f "$err"
    return "$rc"
  fi
  rm -f "$err"
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f\n", (b - a) / 1e9 }'
}

# mbps_cmd BYTES PREP CMD...: MB/s of a command that moves BYTES (dd, a digest), from its
# wall-clock time; fails when it fails.
mbps_cmd() {
  local bytes=$1 t; shift
  t=$(time_cmd "$@")
  awk -v b="$bytes" -v t="$t" 'BEGIN { printf "%.1f\n", b / t / 1e6 }'
}

# curl_mbps down|up EXPECT_BYTES CURL_ARGS...: one transfer; prints MB/s computed from the bytes
# curl moved (size_download for down, size_upload for up) over its time_total. Fails on a curl
# error, a status other than 2xx, or a byte count other than EXPECT_BYTES.
curl_mbps() {
  local dir=$1 expect=$2 out rc=0 code down up secs moved; shift 2
  out=$(curl -sS -o /dev/null -w '%{http_code} %{size_download} %{size_upload} %{time_total}' "$@" 2>&1) || rc=$?
  read -r code down up secs <<<"${out##*$'\n'}"
  [ "$rc" -eq 0 ] || { measure_failed "curl exited $rc ($out): curl $*"; return 1; }
  case $code in 2??) ;; *) measure_failed "HTTP $code: curl $*"; return 1 ;; esac
  moved=$down; [ "$dir" = up ] && moved=$up
  [ "$moved" -eq "$expect" ] || { measure_failed "moved $moved bytes, expected $expect: curl $*"; return 1; }
  awk -v b="$moved" -v t="$secs" 'BEGIN { printf "%.1f\n", b / t / 1e6 }'
}

# parallel_mbps N EXPECT_BYTES CURL_ARGS...: N curls at once; prints the aggregate MB/s (the
# bytes all of them received over the wall-clock time from the first start to the last end).
# Fails when any of them fails, answers other than 2xx, or receives other than EXPECT_BYTES.
parallel_mbps() {
  local n=$1 expect=$2 dir i t0 t1 bad=0 total=0 code bytes rc; shift 2
  dir=$(mktemp -d "${TMPDIR:-/tmp}/depot-bench-par.XXXXXX")
  local pids=()
  sync
  t0=$(now_ns)
  for i in $(seq 1 "$n"); do
    curl -sS -o /dev/null -w '%{http_code} %{size_download}\n' "$@" >"$dir/$i" 2>&1 &
    pids+=($!)
  done
  for i in $(seq 1 "$n"); do
    rc=0; wait "${pids[$((i - 1))]}" || rc=$?
    [ "$rc" -eq 0 ] || { echo "client $i: curl exited $rc: $(tr '\n' ' ' <"$dir/$i")" >>"$dir/errors"; bad=1; }
  done
  t1=$(now_ns)
  for i in $(seq 1 "$n"); do
    read -r code bytes <<<"$(tail -1 "$dir/$i")"
    case $code in 2??) ;; *) echo "client $i: HTTP $code" >>"$dir/errors"; bad=1 ;; esac
    [ "${bytes:-0}" = "$expect" ] || { echo "client $i: received ${bytes:-0} bytes, expected $expect" >>"$dir/errors"; bad=1; }
    total=$((total + ${bytes:-0}))
  done
  if [ "$bad" -ne 0 ]; then
    measure_failed "$n parallel curl $*: $(head -5 "$dir/errors" | tr '\n' ';')" || true
    rm -rf "$dir"
    return 1
  fi
  rm -rf "$dir"
  awk -v b="$total" -v a="$t0" -v c="$t1" 'BEGIN { printf "%.1f\n", b / ((c - a) / 1e9) / 1e6 }'
}

# wrk_result WRK_ARGS...: one wrk run with benchmarks/ranges.lua (RANGE_SIZE and CONNS, wrk's
# -c, in the environment); prints its RESULT line ("p50=… p99=… p999=… rps=… errors=… non2xx=…
# requests=… bytes=…"). Fails when wrk fails or prints no result, on any socket error or answer
# with a status of 400 or more, and when the bytes received are not RANGE_SIZE plus a head
# (under 1 KiB) per request, give or take one answer in flight per connection when the time
# was up: a 200 with the whole body or an empty 3xx is not a range.
wrk_result() {
  local out rc=0 line errors non2xx requests bytes
  out=$(wrk "$@" 2>&1) || rc=$?
  [ "$rc" -eq 0 ] || { measure_failed "wrk exited $rc: $(printf '%s' "$out" | tail -3 | tr '\n' ' ')"; return 1; }
  line=$(printf '%s\n' "$out" | sed -n 's/^RESULT //p')
  [ -n "$line" ] || { measure_failed "wrk gave no result: $(printf '%s' "$out" | tail -3 | tr '\n' ' ')"; return 1; }
  errors=$(field "$line" errors); non2xx=$(field "$line" non2xx); requests=$(field "$line" requests); bytes=$(field "$line" bytes)
  [ "$errors" = 0 ] && [ "$non2xx" = 0 ] \
    || { measure_failed "wrk $*: $errors socket errors, $non2xx answers with status >= 400"; return 1; }
  [ "$requests" -gt 0 ] && [ "$bytes" -ge $((requests * ${RANGE_SIZE:?})) ] && [ "$bytes" -le $(((requests + ${CONNS:?}) * (RANGE_SIZE + 1024))) ] \
    || { measure_failed "wrk $*: $bytes bytes for $requests answers to ranges of $RANGE_SIZE bytes"; return 1; }
  echo "$line"
}

# field "k1=v1 k2=v2" KEY: the value of KEY.
field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

# stats VALUE...: "median min max" of the values.
stats() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
    END { med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; print med, v[1], v[NR] }'
}

# cell VALUE...: "MEDIAN (MIN–MAX)", rounded to FMT (default %.0f).
cell() {
  local fmt=${FMT:-%.0f}
  read -r med lo hi <<<"$(stats "$@")"
  awk -v m="$med" -v l="$lo" -v h="$hi" -v f="$fmt" 'BEGIN { printf f " (" f "–" f ")", m, l, h }'
}

# verdict higher|lower "A VALUES" "B VALUES": the ratio of A's median to B's, and what it shows:
# a win or a loss for A only when the spreads (min–max over the runs) do not overlap.
verdict() {
  local better=$1 a b; read -r -a a <<<"$2"; read -r -a b <<<"$3"
  read -r am alo ahi <<<"$(stats "${a[@]}")"
  read -r bm blo bhi <<<"$(stats "${b[@]}")"
  awk -v am="$am" -v alo="$alo" -v ahi="$ahi" -v bm="$bm" -v blo="$blo" -v bhi="$bhi" -v better="$better" 'BEGIN {
    r = (bm == 0) ? 0 : am / bm
    if (alo > bhi) word = (better == "higher") ? "better" : "worse"
    else if (ahi < blo) word = (better == "higher") ? "worse" : "better"
    else word = "spreads overlap"
    printf "%.2f, %s", r, word
  }'
}

# machine_note: the sentence every report carries about where its clients run.
machine_note() {
  echo "Loopback on one machine with $(nproc) cores: the clients (curl, wrk) share the server's cores, so every figure is the server and its clients together."
}
