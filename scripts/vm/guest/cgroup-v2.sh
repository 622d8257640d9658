#!/bin/sh
# cgroup v2 acceptance checks for minion-runtime, run inside a systemd + cgroup v2 guest
# (scripts/vm/run-tests.sh). Each check drives the real runtime CLI on a busybox bundle
# and reads the unified hierarchy's own files: memory.max + an OOM kill reported as 137 /
# OOMKilled, pids.max making fork fail, cpu.max bounding measured usage_usec, cpu.weight
# from shares, the cgroup removed on delete, and the devices allowlist enforced.
# Usage: cgroup-v2.sh /path/to/minion-runtime
set -u
rt=$1
cg=/sys/fs/cgroup
work=$(mktemp -d /tmp/cgv2.XXXXXX)
failed=0
n=0
cleanup() {
  for s in "$work"/*/state; do
    [ -d "$s" ] || continue
    for id in $(ls "$s" 2>/dev/null); do "$rt" --root "$s" delete --force "$id" >/dev/null 2>&1; done
  done
  for d in "$cg"/mvm-$$-*; do [ -d "$d" ] && { rmdir "$d"/ctr 2>/dev/null; rmdir "$d" 2>/dev/null; }; done
  rm -rf "$work"
}
trap cleanup EXIT

ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; failed=$((failed + 1)); }

# new_ctr NAME RESOURCES_JSON ARGS_JSON: writes a bundle; sets $dir $top $id.
new_ctr() {
  n=$((n + 1))
  id="mvm-$1-$n"; top="mvm-$$-$n"; dir="$work/$id"
  mkdir -p "$dir/bundle/rootfs/bin" "$dir/state"
  for d in proc sys dev tmp etc; do mkdir -p "$dir/bundle/rootfs/$d"; done
  cp /bin/busybox "$dir/bundle/rootfs/bin/busybox"
  for l in sh cat sleep echo true; do ln -s busybox "$dir/bundle/rootfs/bin/$l"; done
  cat > "$dir/bundle/config.json" <<JSON
{"ociVersion": "1.0.2", "root": {"path": "rootfs"},
 "process": {"args": $3, "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}},
 "hostname": "cgv2",
 "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}],
 "annotations": {"io.minion.log.path": "$dir/ctr.log"},
 "linux": {"cgroupsPath": "/$top/ctr", "resources": $2,
           "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "uts"}, {"type": "ipc"}, {"type": "network"}]}}
JSON
}
rtc() { "$rt" --root "$dir/state" "$@"; }
field() { rtc state "$id" | tr -d '\n' | sed -n "s/.*\"$1\": *\"\{0,1\}\([^\",}]*\).*/\1/p"; }
wait_stopped() { # bounded: 240 s (TCG is slow)
  i=0
  while [ "$(field status)" != stopped ] && [ "$i" -lt 1200 ]; do sleep 0.2; i=$((i + 1)); done
  [ "$(field status)" = stopped ]
}
leaf() { echo "$cg/$top/ctr"; }

# 1. memory: limit applied as memory.max, allocation past it is OOM-killed: 137 / OOMKilled.
new_ctr oom '{"memory": {"limit": 16777216}, "pids": {"limit": 64}, "cpu": {"shares": 512}}' \
  '["sh", "-c", "x=0123456789abcdef; while :; do x=$x$x; done"]'
if rtc create --bundle "$dir/bundle" "$id" 2>"$dir/err"; then
  v=$(cat "$(leaf)/memory.max" 2>/dev/null); [ "$v" = 16777216 ] && ok "memory.max = $v" || bad "memory.max = '$v', want 16777216"
  v=$(cat "$(leaf)/pids.max" 2>/dev/null); [ "$v" = 64 ] && ok "pids.max = $v" || bad "pids.max = '$v', want 64"
  v=$(cat "$(leaf)/cpu.weight" 2>/dev/null); [ "$v" = 20 ] && ok "cpu.weight = $v (shares 512)" || bad "cpu.weight = '$v', want 20 for shares 512"
  rtc start "$id" || bad "start $id"
  if wait_stopped; then
    code=$(field exitCode); reason=$(field reason)
    [ "$code" = 137 ] && ok "OOM exit code $code" || bad "OOM exit code '$code', want 137 ($(rtc state "$id" | tr -d '\n'))"
    [ "$reason" = OOMKilled ] && ok "OOM reason $reason" || bad "OOM reason '$reason', want OOMKilled"
    ok_kills=$(sed -n 's/^oom_kill //p' "$(leaf)/memory.events" 2>/dev/null)
    echo "     memory.events oom_kill = ${ok_kills:-?}"
  else
    bad "OOM container never stopped"
  fi
  rtc delete --force "$id" || bad "delete $id"
  [ ! -e "$cg/$top/ctr" ] && ok "cgroup $top/ctr removed on delete" || bad "cgroup $top/ctr left after delete"
  rmdir "$cg/$top" 2>/dev/null
else
  bad "create (memory): $(cat "$dir/err")"
fi

# 2. pids: fork fails at the limit.
new_ctr pids '{"pids": {"limit": 5}}' \
  '["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 30 & done; echo spawned; exit 0"]'
if rtc create --bundle "$dir/bundle" "$id" 2>"$dir/err"; then
  v=$(cat "$(leaf)/pids.max" 2>/dev/null); [ "$v" = 5 ] && ok "pids.max = $v" || bad "pids.max = '$v', want 5"
  rtc start "$id" || bad "start $id"
  if wait_stopped; then
    grep -q "can't fork" "$dir/ctr.log" && ok "fork fails at pids.max ($(grep -c "can't fork" "$dir/ctr.log") failed forks)" \
      || bad "no fork failure at the pids limit: $(cat "$dir/ctr.log")"
    ev=$(sed -n 's/^max //p' "$(leaf)/pids.events" 2>/dev/null)
    echo "     pids.events max = ${ev:-?}"
  else
    bad "pids container never stopped"
  fi
  rtc delete --force "$id" || bad "delete $id"
  rmdir "$cg/$top" 2>/dev/null
else
  bad "create (pids): $(cat "$dir/err")"
fi

# 3. cpu quota: 20% of a CPU (20000/100000); measured usage_usec over wall time stays near it.
new_ctr cpu '{"cpu": {"quota": 20000, "period": 100000}}' '["sh", "-c", "while :; do :; done"]'
if rtc create --bundle "$dir/bundle" "$id" 2>"$dir/err"; then
  v=$(cat "$(leaf)/cpu.max" 2>/dev/null); [ "$v" = "20000 100000" ] && ok "cpu.max = $v" || bad "cpu.max = '$v', want '20000 100000'"
  rtc start "$id" || bad "start $id"
  sleep 1
  u0=$(sed -n 's/^usage_usec //p' "$(leaf)/cpu.stat"); t0=$(cat /proc/uptime | cut -d' ' -f1)
  sleep 5
  u1=$(sed -n 's/^usage_usec //p' "$(leaf)/cpu.stat"); t1=$(cat /proc/uptime | cut -d' ' -f1)
  pct=$(awk -v u0="$u0" -v u1="$u1" -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%d", (u1 - u0) / ((t1 - t0) * 1e6) * 100 + 0.5 }')
  thr=$(sed -n 's/^nr_throttled //p' "$(leaf)/cpu.stat")
  if [ "$pct" -ge 10 ] && [ "$pct" -le 30 ]; then ok "cpu quota 20% -> measured ${pct}% (nr_throttled $thr)"
  else bad "cpu quota 20% -> measured ${pct}% of a CPU (nr_throttled $thr)"; fi
  rtc delete --force "$id" || bad "delete $id"
  [ ! -e "$cg/$top/ctr" ] && ok "cgroup removed after delete --force of a running container" || bad "cgroup $top/ctr left after delete --force"
  rmdir "$cg/$top" 2>/dev/null
else
  bad "create (cpu): $(cat "$dir/err")"
fi

# 4. the container's own view: cgroup namespace root and a cgroup2 /sys/fs/cgroup.
new_ctr view '{"memory": {"limit": 33554432}}' '["sh", "-c", "cat /proc/self/cgroup"]'
if rtc create --bundle "$dir/bundle" "$id" 2>"$dir/err"; then
  rtc start "$id" || bad "start $id"
  if wait_stopped; then
    line=$(grep -o '0::[^ ]*' "$dir/ctr.log" | head -n1)
    [ -n "$line" ] && ok "container sees a unified cgroup: $line" || bad "no 0:: line in /proc/self/cgroup: $(cat "$dir/ctr.log")"
  else
    bad "view container never stopped"
  fi
  rtc delete --force "$id" || bad "delete $id"
  rmdir "$cg/$top" 2>/dev/null
else
  bad "create (view): $(cat "$dir/err")"
fi

# 5. devices: a node the spec creates (/dev/kmsg, c 1:11) but no linux.resources.devices
# rule allows must not open. On v2 there are no devices.* files: runc enforces this with
# an eBPF program (BPF_CGROUP_DEVICE) attached to the container's cgroup.
new_ctr dev '{"memory": {"limit": 33554432}}' \
  '["sh", "-c", "(: > /dev/kmsg) 2>/dev/null && echo kmsg-open || echo kmsg-denied"]'
sed -i 's|"namespaces"|"devices": [{"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11}], "namespaces"|' "$dir/bundle/config.json"
if rtc create --bundle "$dir/bundle" "$id" 2>"$dir/err"; then
  rtc start "$id" || bad "start $id"
  if wait_stopped; then
    if grep -q kmsg-denied "$dir/ctr.log"; then ok "device not in the allowlist is denied (/dev/kmsg)"
    else bad "device allowlist not enforced: /dev/kmsg opened for writing ($(grep -o 'kmsg-[a-z]*' "$dir/ctr.log"))"; fi
  else
    bad "devices container never stopped"
  fi
  rtc delete --force "$id" || bad "delete $id"
  rmdir "$cg/$top" 2>/dev/null
else
  bad "create (devices): $(cat "$dir/err")"
fi

echo "cgroup v2 checks: $failed failed"
[ "$failed" = 0 ]
