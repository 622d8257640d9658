#!/usr/bin/env bash
# Runs minion-runtime's tests for real under cgroup v2 + systemd, inside a Debian 12 VM
# booted with QEMU's software emulation (TCG): the CI machines are cgroup v1 (hybrid) VMs
# whose /dev/kvm cannot boot a stock kernel. The guest has no network (-nic none) and its
# disk is never written (snapshot=on); a 9p share carries the binaries in and the log
# and exit code out. Prints the guest's test summary and exits with the guest's exit code.
#
# Environment:
#   MINION_VM_TIMEOUT   seconds before the VM is killed (default 3000)
#   MINION_VM_TESTS     test targets to run (default "lib bin contract lifecycle";
#                       pull needs a registry, skopeo and umoci, absent in the guest)
#   MINION_VM_THREADS   --test-threads inside the guest (default 2)
#   MINION_VM_LOGS      where the guest log and console are kept (default target/vm)
#   MINION_VM_CACHE     image cache (default /var/cache/minion-vm)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
. "$here/lib.sh"

[ "$(id -u)" = 0 ] || die "run as root"
case "${1:-}" in -h|--help) sed -n '2,15p' "$0"; exit 0 ;; "") ;; *) die "unknown argument: $1" ;; esac
timeout_s=${MINION_VM_TIMEOUT:-3000}
targets=${MINION_VM_TESTS:-lib bin contract lifecycle}
threads=${MINION_VM_THREADS:-2}
logs=${MINION_VM_LOGS:-$repo/target/vm}

t_start=$(date +%s)
qemu=$(ensure_qemu)
bash "$here/build-image.sh"

# ---- build on the host (the guest is Debian 12 like the host: same glibc) ------------
sel=()
for t in $targets; do
  case "$t" in lib) sel+=(--lib) ;; bin) sel+=(--bins) ;; *) sel+=(--test "$t") ;; esac
done
log "building minion-runtime and its test executables (cargo test -p minion-runtime ${sel[*]} --no-run)"
json=$(cd "$repo" && cargo test -p minion-runtime "${sel[@]}" --no-run --message-format=json 2>/dev/null) \
  || { (cd "$repo" && cargo test -p minion-runtime "${sel[@]}" --no-run) >&2 || true; die "cargo test --no-run failed"; }
# "kind name executable" for each test executable of the runtime package.
exes=$(printf '%s\n' "$json" | python3 -c '
import json, sys
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable") or not m["profile"]["test"]: continue
    if not m["package_id"].split("#")[0].endswith("/runtime") and "minion-runtime" not in m["package_id"]: continue
    t = m["target"]; kind = t["kind"][0]
    name = "lib" if kind == "lib" else ("bin" if kind == "bin" else t["name"])
    print(name, m["executable"])
')
[ -n "$exes" ] || die "cargo listed no test executables for minion-runtime"
runtime_bin="$repo/target/debug/minion-runtime"
[ -x "$runtime_bin" ] || die "missing $runtime_bin"

# ---- the share -------------------------------------------------------------------------
share=$(mktemp -d /tmp/minion-vm.XXXXXX)
qpid=""
cleanup() {
  if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then
    kill "$qpid" 2>/dev/null || true
    sleep 1
    kill -9 "$qpid" 2>/dev/null || true
  fi
  rm -rf "$share"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$share/files"
: > "$share/files.txt"
: > "$share/tests.txt"
ship() { # ship HOSTPATH: copied into the share, put back at HOSTPATH in the guest
  local f=$1 n
  n=files/$(printf '%s' "$f" | tr '/' '_')
  cp -l "$f" "$share/$n" 2>/dev/null || cp "$f" "$share/$n"
  echo "$n $f" >> "$share/files.txt"
}
for f in "$repo"/target/debug/minion-*; do
  [ -f "$f" ] && [ -x "$f" ] && ship "$f"
done
while read -r name exe; do
  if [[ " $targets " == *" $name "* ]]; then
    ship "$exe"
    echo "$name $exe" >> "$share/tests.txt"
  fi
done <<< "$exes"
[ -s "$share/tests.txt" ] || die "none of the targets '$targets' found among: $(echo "$exes" | cut -d' ' -f1 | tr '\n' ' ')"
# runc: the peer some contract tests compare against.
if r=$(command -v runc); then ship "$r"; fi
cp "$here/guest/run.sh" "$here/guest/cgroup-v2.sh" "$share/"
cat > "$share/env.sh" <<EOF
MANIFEST_DIR=$repo/runtime
RUNTIME_BIN=$runtime_bin
TEST_THREADS=$threads
TEST_TIMEOUT=$(( timeout_s > 300 ? timeout_s - 120 : timeout_s / 2 ))
EOF

# ---- boot ------------------------------------------------------------------------------
log "booting the guest (TCG, 2 vCPUs, no network; timeout ${timeout_s}s)"
t_boot=$(date +%s)
"$qemu" -name minion-vm-tests -accel tcg,thread=multi -cpu max -smp 2 -m 2048 \
  -nic none -nographic -no-reboot -monitor none -serial "file:$share/console.log" \
  -kernel "$CACHE/vmlinuz" -initrd "$CACHE/initrd.img" \
  -append "console=ttyS0 panic=-1 quiet loglevel=3 minion.ci" \
  -drive "file=$CACHE/root.raw,format=raw,if=virtio,snapshot=on" \
  -virtfs "local,path=$share,mount_tag=ci,security_model=none" \
  </dev/null >"$share/qemu.out" 2>&1 &
qpid=$!
deadline=$((t_boot + timeout_s))
while kill -0 "$qpid" 2>/dev/null; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    log "timeout after ${timeout_s}s: killing qemu (pid $qpid)"
    kill "$qpid" 2>/dev/null || true
    break
  fi
  sleep 2
done
wait "$qpid" 2>/dev/null || true
qpid=""
t_end=$(date +%s)

mkdir -p "$logs"
for f in run.log console.log qemu.out; do [ -f "$share/$f" ] && cp "$share/$f" "$logs/$f"; done
if [ ! -f "$share/exit-code" ]; then
  log "the guest wrote no exit code; console tail:"
  tail -n 30 "$share/console.log" 2>/dev/null >&2 || true
  tail -n 5 "$share/qemu.out" >&2 || true
  exit 124
fi
rc=$(cat "$share/exit-code")
echo "---- guest summary (full log: $logs/run.log) ----"
grep -E '^(== |test result:|ok   |FAIL |cgroup v2 checks:|    [a-z_:]+$|failures:|---- .* stdout ----|thread .* panicked)' "$share/run.log" || true
echo "---- guest exit $rc; VM ran $((t_end - t_boot))s; total $((t_end - t_start))s ----"
exit "$rc"
