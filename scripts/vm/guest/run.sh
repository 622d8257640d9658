#!/bin/sh
# Guest side of scripts/vm/run-tests.sh, run by the image's minion-ci.service from the 9p
# share mounted at /mnt/ci. Puts the shipped files back at their host paths (the test
# executables have the runtime binary's absolute path compiled in), checks that the
# guest is cgroup v2 with the controllers minion uses, runs the runtime's test
# executables with CI=true (privileged tests fail rather than skip) and the cgroup v2
# acceptance checks, and exits non-zero when anything failed.
set -u
share=/mnt/ci
. "$share/env.sh"
export CI=true RUST_BACKTRACE=1 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
rc=0
note() { echo "== $*"; }

note "guest: kernel $(uname -r), $(systemctl --version | head -n1), $(nproc) cpus, pid1 $(cat /proc/1/comm)"
fstype=$(stat -f -c %T /sys/fs/cgroup)
ctrls=$(cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null)
note "/sys/fs/cgroup: $fstype; controllers: $ctrls"
if [ "$fstype" != cgroup2fs ]; then note "FAIL: /sys/fs/cgroup is not cgroup2"; exit 2; fi
for c in memory pids cpu; do
  case " $ctrls " in *" $c "*) ;; *) note "FAIL: controller $c missing"; exit 2 ;; esac
done

# Files back at their host paths ("relative-in-share absolute-host-path" per line).
while read -r src dst; do
  mkdir -p "$(dirname "$dst")"
  cp "$share/$src" "$dst" && chmod 755 "$dst"
done < "$share/files.txt"

start=$(date +%s)
while read -r name exe; do
  note "test executable $name ($exe)"
  mkdir -p "$MANIFEST_DIR"
  t0=$(date +%s)
  (cd "$MANIFEST_DIR" && CARGO_MANIFEST_DIR="$MANIFEST_DIR" timeout "$TEST_TIMEOUT" "$exe" --test-threads="$TEST_THREADS")
  r=$?
  note "test executable $name: exit $r in $(( $(date +%s) - t0 ))s"
  [ "$r" = 0 ] || rc=1
done < "$share/tests.txt"

note "cgroup v2 acceptance checks (scripts/vm/guest/cgroup-v2.sh)"
t0=$(date +%s)
sh "$share/cgroup-v2.sh" "$RUNTIME_BIN"
r=$?
note "cgroup v2 acceptance checks: exit $r in $(( $(date +%s) - t0 ))s"
[ "$r" = 0 ] || rc=1

if [ "$rc" != 0 ]; then
  # The console runs at loglevel 3: what the kernel said about killed or crashed
  # processes (OOM kills, segfaults) only shows here.
  note "kernel messages about killed or crashed processes"
  dmesg | grep -iE "oom|killed process|segfault|traps:|general protection" | tail -n 40
fi
note "guest total: $(( $(date +%s) - start ))s, exit $rc"
exit "$rc"
