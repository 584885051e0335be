# Shared helpers for the benchmark scripts (sourced, not run).
# Needs: ROOT (repository root), SIZE_MIB, WORK.

# build_depot: release build; sets DEPOT to the binary.
build_depot() {
  echo "+ swift build -c release --product depot" >&2
  (cd "$ROOT" && swift build -c release --product depot >&2)
  DEPOT="$(cd "$ROOT" && swift build -c release --show-bin-path)/depot"
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

# time_cmd PREP CMD...: runs PREP (untimed, via eval), syncs, then prints the seconds CMD took.
time_cmd() {
  local prep=$1; shift
  eval "$prep"
  sync
  local t0 t1
  t0=$(now_ns); "$@" >/dev/null 2>&1; t1=$(now_ns)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f\n", (b - a) / 1e9 }'
}

# median_mbps SECONDS...: median throughput in MB/s (10^6 bytes) for SIZE_MIB.
median_mbps() {
  printf '%s\n' "$@" | sort -n | awk -v bytes=$((SIZE_MIB << 20)) '
    { t[NR] = $1 }
    END { med = (NR % 2) ? t[(NR + 1) / 2] : (t[NR / 2] + t[NR / 2 + 1]) / 2; printf "%.1f\n", bytes / med / 1e6 }'
}

# report LABEL SECONDS...: one Markdown table row: median throughput, spread, median time.
report() {
  local label=$1; shift
  printf '%s\n' "$@" | sort -n | awk -v label="$label" -v bytes=$((SIZE_MIB << 20)) '
    { t[NR] = $1 }
    END {
      med = (NR % 2) ? t[(NR + 1) / 2] : (t[NR / 2] + t[NR / 2 + 1]) / 2
      printf "| %-38s | %6.0f MB/s | %4.0f-%-4.0f MB/s | %.3f s |\n", label, bytes / med / 1e6, bytes / t[NR] / 1e6, bytes / t[1] / 1e6, med
    }'
}

table_header() {
  echo "| what                                   | median      | spread         | time    |"
  echo "|----------------------------------------|-------------|----------------|---------|"
}
